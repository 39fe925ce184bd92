"""Database wiring: engine, sessions, metadata, and the per-request session.

Everything here takes explicit arguments (`Database(url, timeout=...)`); the values
come from `quart_api.settings` in the app factory. Only `init_app` / `get_session`
touch Quart, so the models and the CLI can use a `Database` without an app.

SQLite (the embedded default) gets the documented pysqlite workaround: the driver's
own transaction handling is switched off on connect and SQLAlchemy's "begin" event
emits `BEGIN IMMEDIATE` itself. That makes SAVEPOINTs (`begin_nested`) part of the
enclosing transaction, and makes every transaction take SQLite's single write lock up
front, so concurrent writers wait (busy timeout) instead of failing halfway with
"database is locked" when a deferred reader tries to become a writer.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from weakref import WeakKeyDictionary

from quart import current_app, g, has_request_context, request
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from quart_api.adapters import sqlalchemy_asyncpg

if TYPE_CHECKING:
    from quart import Quart

__all__ = [
    "MIGRATIONS_DIRECTORY",
    "NAMING_CONVENTION",
    "SQLITE_BEGIN_OPTION",
    "Base",
    "Database",
    "DatabaseUnavailable",
    "Migrations",
    "current_session",
    "describe_error",
    "get_database",
    "get_session",
    "init_app",
    "is_missing_table",
    "is_retryable_error",
    "metadata",
    "read_migrations",
]

#: Constraint names are deterministic, so migrations can refer to them by name
#: (SQLite's batch mode needs names to drop or alter a constraint).
NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    """Declarative base of every model; shares the naming-convention `metadata`."""

    metadata = metadata


#: Execution option read by the SQLite "begin" hook: `"IMMEDIATE"` (default) or
#: `"DEFERRED"` for work known to be read-only (it then does not queue behind writers).
SQLITE_BEGIN_OPTION: Final = "sqlite_begin"

#: SQLSTATEs after which repeating the work can succeed: serialization failure and
#: deadlock (PostgreSQL reports both as 40xxx "transaction rollback").
RETRYABLE_SQLSTATES: Final = frozenset({"40001", "40P01"})

#: SQLSTATE classes/codes meaning "the server cannot serve us now".
_UNAVAILABLE_SQLSTATE_PREFIXES: Final = ("08", "53", "57P")
#: Seconds a pooled PostgreSQL connection may sit idle and still be handed out without
#: a ping (see ``_ping_without_waiting``).
PING_AFTER_IDLE: Final = 0.5


class DatabaseUnavailable(Exception):
    """The database did not answer within the deadline, or the connection failed.

    The API maps it to 503: the request was fine, the backend was not. ``refused``
    tells a server that said no (refused connection, reset, failed login, too many
    clients) from one that did not answer in time.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _sqlstate(exc: BaseException) -> str | None:
    """SQLSTATE of a DBAPI error, looking through SQLAlchemy's and the adapter's wrapping."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _sqlite_locked(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return "database is locked" in str(orig) or "database table is locked" in str(orig)


def is_retryable_error(exc: BaseException) -> bool:
    """True for errors after which the same work, repeated, can succeed.

    asyncpg's serialization failures and deadlocks arrive as a plain `DBAPIError`
    (not `OperationalError`) whose `.orig` carries `sqlstate`; SQLite reports a busy
    database as "database is locked".
    """
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    return _sqlstate(exc) in RETRYABLE_SQLSTATES or _sqlite_locked(exc)


def is_missing_table(exc: BaseException) -> bool:
    """True when ``exc`` says a table does not exist: the schema was never migrated.

    PostgreSQL reports SQLSTATE 42P01 (``relation "users" does not exist``); SQLite
    says ``no such table``.
    """
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return _sqlstate(exc) == "42P01" or "no such table" in str(orig)


def describe_error(exc: BaseException) -> str:
    """One line on why database work failed: the driver's own words, first line only.

    Never the SQL statement, its parameters or the URL (SQLAlchemy's ``str()`` of a
    DBAPI error carries the statement and parameters; connection errors can carry
    the URL), so the line is safe for logs and operators' terminals.
    """
    if isinstance(exc, DatabaseUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__
    root: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    if root.__cause__ is not None and type(root).__module__.startswith("sqlalchemy"):
        root = root.__cause__  # the driver's error under SQLAlchemy's adapter
    if isinstance(root, TimeoutError | PoolTimeoutError):
        return "no answer in time"
    words = str(root).strip().splitlines()
    return f"{type(root).__name__}: {words[0]}" if words else type(root).__name__


def _is_refusal(exc: BaseException) -> bool:
    """True when the server (or the OS for it) said no, rather than staying silent."""
    for candidate in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        if isinstance(candidate, ConnectionError | ConnectionRefusedError):
            return True
        if isinstance(candidate, OSError) and not isinstance(candidate, TimeoutError):
            return True
    code = _sqlstate(exc)
    return code is not None and code.startswith(("08", "28", "53", "57P"))


def _is_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the server is unreachable, stalled or refusing work."""
    if isinstance(exc, TimeoutError | PoolTimeoutError | OSError | InterfaceError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or _sqlite_locked(exc):
        return True
    if isinstance(exc.orig, OSError | TimeoutError | sqlite3.InterfaceError):
        return True
    code = _sqlstate(exc)
    return code is not None and code.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)


class Database:
    """An async engine plus its session factory, built from explicit settings.

    Args:
        url: SQLAlchemy URL, e.g. `postgresql+asyncpg://...` or
            `sqlite+aiosqlite:///file.db`.
        timeout: seconds; the client-side bound on database work: pool checkout,
            connecting, each statement (asyncpg `command_timeout`), SQLite's busy
            wait, and the default of `deadline()`.
        pool_size: connections kept open, and the most ever open (PostgreSQL; SQLite
            files pool too). A request past them waits for one, within `timeout`: an
            overflow connection would be opened and closed again within the burst,
            a PostgreSQL backend forked for a few requests. Nothing in the service
            holds one connection while it waits for a second, so a fixed pool never
            waits on itself.
        echo: log every statement (debugging only).
        ping_after_idle: PostgreSQL: seconds a pooled connection may have been idle
            and still be handed out without a ping (0: ping every checkout).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        pool_size: int = 10,
        echo: bool = False,
        ping_after_idle: float = PING_AFTER_IDLE,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"Database timeout must be positive seconds, got {timeout!r}")
        self.url: URL = make_url(url)
        self.timeout = timeout
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
        if self.is_sqlite:
            # sqlite3's own `timeout` is the busy timeout: writers wait for the lock.
            kwargs["connect_args"] = {"timeout": timeout}
            if self.url.database not in (None, "", ":memory:"):
                kwargs.update(pool_size=pool_size, max_overflow=0, pool_timeout=timeout)
        else:
            kwargs.update(pool_size=pool_size, max_overflow=0, pool_timeout=timeout)
            if self.url.get_driver_name() == "asyncpg":
                kwargs["connect_args"] = {"timeout": timeout, "command_timeout": timeout}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _install_sqlite_hooks(self.engine)
        elif self.url.get_driver_name() == "asyncpg":
            _terminate_at_once(self.engine)
            _ping_without_waiting(self.engine, ping_after_idle)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        #: Sessions for requests that only read (GET, HEAD, OPTIONS). On SQLite their
        #: transactions begin DEFERRED: under WAL a reader never waits for the write
        #: lock, so reads stay fast while writers queue for it.
        self.reader_sessionmaker: async_sessionmaker[AsyncSession] = (
            async_sessionmaker(
                self.engine.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"}),
                expire_on_commit=False,
            )
            if self.is_sqlite
            else self.sessionmaker
        )

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    async def dispose(self) -> None:
        """Close every pooled connection (the engine stays usable and reconnects)."""
        await self.engine.dispose()

    def deadline(self, seconds: float | None = None) -> AbstractAsyncContextManager[None]:
        """Bound the enclosed database work; raise `DatabaseUnavailable` past it.

        A stalled server never answers and a server-side statement timeout never
        fires, so the bound must be client-side (`asyncio.timeout`), counted from
        entering the block. Connection failures inside the block become
        `DatabaseUnavailable` too; other errors (integrity, programming) pass
        through unchanged.
        """
        return _Deadline(self.timeout if seconds is None else seconds)

    async def ping(self) -> None:
        """Run `SELECT 1` within `timeout`; raise `DatabaseUnavailable` on failure."""
        async with self.deadline(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = await conn.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
            await conn.execute(text("SELECT 1"))

    async def schema_revisions(self) -> frozenset[str]:
        """The Alembic revisions the schema is at (empty: never migrated), in one query.

        Raises `DatabaseUnavailable` when the database does not answer within `timeout`.
        """
        async with self.deadline(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = await conn.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
            try:
                rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            except SQLAlchemyError as error:
                if is_missing_table(error):
                    return frozenset()
                raise
            return frozenset(str(row[0]) for row in rows)


class _Deadline:
    """`Database.deadline()`: `asyncio.timeout` plus the mapping of failures to
    `DatabaseUnavailable`. A class, not an `asynccontextmanager` generator: every
    database request enters one, and a generator costs an async generator, its
    first-iteration hook and contextlib's wrapper each time."""

    __slots__ = ("_seconds", "_timeout")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        self._timeout = asyncio.timeout(self._seconds)
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._timeout is not None:
            try:
                # Turns the cancellation of a passed deadline into TimeoutError.
                await self._timeout.__aexit__(kind, error, traceback)
            except TimeoutError as timeout:
                raise _unavailable(timeout) from timeout
        if (
            isinstance(error, Exception)
            and not isinstance(error, DatabaseUnavailable)
            and _is_unavailable(error)
        ):
            raise _unavailable(error) from error


def _unavailable(error: Exception) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"database unavailable: {describe_error(error)}", refused=_is_refusal(error)
    )


#: The Alembic scripts (`alembic.ini`'s `script_location`), beside the package.
MIGRATIONS_DIRECTORY: Final = Path(__file__).resolve().parent.parent / "migrations"


@dataclass(frozen=True, slots=True)
class Migrations:
    """What the Alembic scripts say the schema should be: `heads`, out of `known`."""

    heads: frozenset[str]
    known: frozenset[str]

    def is_current(self, revisions: frozenset[str]) -> bool:
        """True when `revisions` (from `alembic_version`) is the head, or past it.

        A revision these scripts do not know was written by a newer release (a rolling
        deploy migrates before every old instance has stopped): that schema is not
        behind, so it counts as current. No revision, or a known one short of the
        head, is not migrated.
        """
        if not revisions:
            return False
        return revisions == self.heads or not revisions <= self.known


@functools.cache
def read_migrations(directory: Path = MIGRATIONS_DIRECTORY) -> Migrations | None:
    """The heads of the Alembic scripts in `directory` (read once a process), or None
    when they are not there (a wheel installed without the repository)."""
    if not (directory / "versions").is_dir():
        return None
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(directory))
    return Migrations(
        heads=frozenset(scripts.get_heads()),
        known=frozenset(script.revision for script in scripts.walk_revisions()),
    )


def _terminate_at_once(engine: AsyncEngine) -> None:
    """Drop asyncpg connections at once, never with a graceful close that waits.

    SQLAlchemy closes gracefully, waiting up to 2 s for the server's reply (without a
    bound in some versions), in whatever task gives the connection back:

    - an invalidated one (a call cut short by `deadline()` is cancelled): against a
      stalled server the request answered after the timeout plus that wait;
    - every pooled one on `dispose()`, when serving stops: a frozen server would hold
      the shutdown, and a cancelled close is logged as an error with a traceback.

    Either connection is done with: it holds no transaction (the pool rolled back
    before closing), and PostgreSQL ends an idle session whose socket closes as it
    ends one told goodbye, logging nothing.
    """
    sqlalchemy_asyncpg.replace_terminate(engine, lambda connection: connection.terminate())
    sqlalchemy_asyncpg.replace_close(engine, lambda connection: connection.terminate())


def _ping_without_waiting(engine: AsyncEngine, ping_after_idle: float) -> None:
    """The pool's pre-ping in one round trip, with nothing to wait for when cut short,
    and only for a connection idle for ``ping_after_idle`` seconds or closed.

    SQLAlchemy pings asyncpg with an extended-protocol query inside a transaction
    (for pgbouncer's transaction mode), rolled back in a `finally`: three round
    trips on every checkout, and when `deadline()` cancels a request during that
    ping (the server stalled), the rollback still waits for the stalled server, up
    to another full timeout, in the request's task. `SELECT 1` over the simple query
    protocol is one message: no prepared statement for pgbouncer to route apart, so
    no transaction around it. (asyncpg cannot send an empty query this way: it
    fails reading the empty reply's status.) A ping that fails or is cancelled gets
    its connection invalidated by the pool.

    A connection given back to the pool a moment ago answered a moment ago: under
    load, pinging it would add a round trip to every request for nothing, so it is
    handed out as it is (HikariCP's ``aliveBypassWindowMs`` does the same, 500 ms).
    One whose server closed it meanwhile (a restart) reads as closed without any
    I/O, and is pinged, so replaced, whatever its age.
    """
    returned: WeakKeyDictionary[Any, float] = WeakKeyDictionary()

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:  # None: it was invalidated
            connection = sqlalchemy_asyncpg.asyncpg_connection(dbapi_connection)
            returned[connection] = time.monotonic()

    def answered_lately(connection: Any) -> bool:
        at = returned.get(connection)
        return (
            at is not None
            and time.monotonic() - at < ping_after_idle
            and not connection.is_closed()
        )

    sqlalchemy_asyncpg.replace_ping(engine, _ping, skip=answered_lately)


async def _ping(connection: Any, in_transaction: bool) -> None:
    """``SELECT 1`` on an asyncpg connection, simple query protocol: one round trip.

    No transaction is needed around it, whether or not the adapter has one open.
    """
    await connection.execute("SELECT 1")


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    """pysqlite SAVEPOINT workaround (SQLAlchemy docs, "sqlite_transactions").

    Never set the `AUTOCOMMIT` isolation level on these connections: resetting it on
    return to the pool would re-enable the driver's own BEGIN handling.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not emit BEGIN/COMMIT around DDL and DML on its own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            # WAL: readers never block the writer and vice versa. No-op on :memory:.
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED", "EXCLUSIVE"):
            raise ValueError(f"{SQLITE_BEGIN_OPTION}={mode!r}: use IMMEDIATE or DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


# --- per-request session (the only part that knows about Quart) -------------------

_G_SESSION: Final = "quart_api_db_session"
#: Methods that never write through the request's session (RFC 9110 9.2.1).
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
EXTENSION_KEY: Final = "database"


def init_app(app: Quart, database: Database) -> None:
    """Register `database` on `app` (`app.extensions["database"]`) and the teardown
    that closes each app context's session. Disposing the engine when serving stops
    is the app factory's job (`await database.dispose()` in `after_serving`)."""
    app.extensions[EXTENSION_KEY] = database
    app.teardown_appcontext(_close_session)


def get_database() -> Database:
    """The current app's `Database` (registered by `init_app`): for `deadline()` and
    short side transactions outside the request's session."""
    database: Database = current_app.extensions[EXTENSION_KEY]
    return database


def current_session() -> AsyncSession | None:
    """The app context's session if `get_session` made one, else None (none is made):
    for reads that need no session of their own (`quart_api.models.reads`)."""
    session: AsyncSession | None = g.get(_G_SESSION)
    return session


def get_session() -> AsyncSession:
    """The current app context's session, created on first use.

    It is closed (rolled back if not committed) when the app context tears down, so
    a handler that forgets to commit writes nothing and never leaks a connection.
    """
    session: AsyncSession | None = g.get(_G_SESSION)
    if session is None:
        database = get_database()
        reads_only = has_request_context() and request.method in _SAFE_METHODS
        session = (database.reader_sessionmaker if reads_only else database.sessionmaker)()
        setattr(g, _G_SESSION, session)
    return session


async def _close_session(_exc: BaseException | None) -> None:
    session: AsyncSession | None = g.pop(_G_SESSION, None)
    if session is None:
        return
    try:
        # The rollback inside close() talks to the server: bound it like any work.
        async with asyncio.timeout(get_database().timeout):
            await session.close()
    except (TimeoutError, DBAPIError, OSError):
        # Drop the connections instead of returning a connection in unknown state.
        await session.invalidate()
