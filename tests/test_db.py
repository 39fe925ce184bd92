"""Database: timeouts and availability, SQLite transactions, the per-request session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quart_api.db import (
    SQLITE_BEGIN_OPTION,
    Database,
    DatabaseUnavailable,
    describe_error,
    get_session,
    init_app,
    is_missing_table,
    is_retryable_error,
    metadata,
    read_migrations,
)
from quart_api.models import User
from quart_api.testing import PostgresServer, free_port


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", timeout=5)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield db
    await db.dispose()


@pytest.fixture
async def pg_db(pg_database: str) -> AsyncIterator[Database]:
    db = Database(pg_database, timeout=5)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield db
    await db.dispose()


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Database("sqlite+aiosqlite:///:memory:", timeout=0)


async def test_ping_answers_on_both_backends(sqlite_db: Database, pg_db: Database) -> None:
    await sqlite_db.ping()
    await pg_db.ping()


# -- availability -------------------------------------------------------------------


async def test_deadline_turns_a_stalled_query_into_unavailable_quickly(pg_db: Database) -> None:
    started = time.monotonic()
    async with pg_db.sessionmaker() as session:
        with pytest.raises(DatabaseUnavailable):
            async with pg_db.deadline(0.5):
                await session.execute(text("SELECT pg_sleep(5)"))
    assert time.monotonic() - started < 3  # pg_sleep(5) was not waited for
    await pg_db.ping()  # the pool recovers: the stalled connection was dropped


async def test_command_timeout_bounds_a_statement_without_a_deadline(pg_database: str) -> None:
    db = Database(pg_database, timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            async with db.deadline(10), db.engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 3  # pg_sleep(5) was not waited for
    finally:
        await db.dispose()


async def test_a_frozen_server_makes_ping_fail_within_the_timeout(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    # SIGSTOP: the kernel still accepts the TCP connection, the server never answers.
    db = Database(pg_database, timeout=0.5)
    postgres_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as caught:
            await db.ping()
        assert time.monotonic() - started < 3  # a frozen server never answers
        assert caught.value.refused is False
    finally:
        postgres_server.resume()
        await db.dispose()


async def test_pooled_connections_of_a_frozen_server_are_closed_at_once(
    postgres_server: PostgresServer, pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Disposing the pool closes what it holds; against a server that stopped
    answering, that close neither hangs nor logs a cancelled close."""
    db = Database(pg_database, timeout=5, pool_size=2)
    try:
        async with db.engine.connect() as first, db.engine.connect() as second:
            for conn in (first, second):  # two connections open, no transaction left
                await conn.execute(text("SELECT 1"))
                await conn.commit()
        postgres_server.pause()
        # Without a bound: a graceful close waits for the frozen server's goodbye.
        async with asyncio.timeout(5):
            await db.dispose()
    finally:
        postgres_server.resume()
        await db.dispose()
    assert not [r for r in caplog.records if "closing connection" in r.getMessage()]


async def test_a_request_past_the_pool_waits_for_a_connection_and_opens_none(
    pg_database: str,
) -> None:
    """The pool is fixed: a burst past ``pool_size`` queues for the open connections
    instead of opening (and, once given back, closing) overflow connections."""
    db = Database(pg_database, timeout=5, pool_size=2)
    connects = 0

    def count(*_args: object) -> None:
        nonlocal connects
        connects += 1

    event.listen(db.engine.sync_engine, "connect", count)
    try:

        async def hold_briefly() -> None:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(0.05)"))

        await asyncio.gather(*(hold_briefly() for _ in range(8)))
    finally:
        await db.dispose()
    assert connects == 2


async def test_a_fixed_pool_still_bounds_the_wait_for_a_connection(pg_database: str) -> None:
    db = Database(pg_database, timeout=0.3, pool_size=1)
    try:
        async with db.engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(DatabaseUnavailable):
                async with db.deadline(), db.engine.connect() as waiting:
                    await waiting.execute(text("SELECT 1"))
    finally:
        await db.dispose()


async def test_a_refused_connection_is_unavailable_and_marked_refused() -> None:
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x", timeout=1)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await db.ping()
    finally:
        await db.dispose()
    assert caught.value.refused is True
    assert "ConnectionRefusedError" in describe_error(caught.value)


async def test_describe_error_gives_the_drivers_words_without_sql_or_parameters(
    sqlite_db: Database, pg_db: Database
) -> None:
    for db in (sqlite_db, pg_db):
        async with db.sessionmaker() as session:
            with pytest.raises(DBAPIError) as caught:
                await session.execute(text("SELECT * FROM no_table WHERE x = :p"), {"p": "s3cret"})
        assert "s3cret" in str(caught.value)  # SQLAlchemy's own text carries the parameters
        line = describe_error(caught.value)
        assert "s3cret" not in line
        assert "SELECT" not in line
        assert "\n" not in line
        assert "no_table" in line
        assert is_missing_table(caught.value)


async def test_schema_revisions_of_a_database_never_migrated_are_empty(
    sqlite_db: Database, pg_db: Database
) -> None:
    for db in (sqlite_db, pg_db):
        assert await db.schema_revisions() == frozenset()


def test_the_migration_scripts_are_read_once_with_their_head() -> None:
    migrations = read_migrations()
    assert migrations is not None
    assert read_migrations() is migrations
    assert len(migrations.heads) == 1
    assert migrations.heads < migrations.known
    assert not migrations.is_current(frozenset())
    assert migrations.is_current(migrations.heads)
    assert not migrations.is_current(migrations.known - migrations.heads)
    assert migrations.is_current(frozenset({"written-by-a-newer-release"}))


# --- database errors through the real alembic command ----------------------------------

ROOT = Path(__file__).resolve().parent.parent


def alembic_upgrade(cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+asyncpg://app:s3cret@127.0.0.1:{port}/app", "ConnectionRefusedError"),
        ("postgres://app:s3cret@127.0.0.1:{port}/app", "ConnectionRefusedError"),
        ("mysql://app:s3cret@127.0.0.1:{port}/app", "has scheme 'mysql'"),
    ],
)
def test_alembic_says_in_one_line_why_it_cannot_migrate_without_the_password(
    tmp_path: Path, url: str, reason: str
) -> None:
    done = alembic_upgrade(tmp_path, url.format(port=free_port()))
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "DATABASE_URL" in done.stderr
    assert reason in done.stderr
    assert "s3cret" not in done.stderr


async def test_other_errors_pass_through_the_deadline(sqlite_db: Database, pg_db: Database) -> None:
    for db in (sqlite_db, pg_db):
        async with db.sessionmaker() as session:
            with pytest.raises(DBAPIError) as exc:
                async with db.deadline():
                    await session.execute(text("SELECT * FROM no_such_table"))
            assert not isinstance(exc.value, DatabaseUnavailable)


async def test_a_deadline_that_passes_is_unavailable_caused_by_the_timeout(
    sqlite_db: Database,
) -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        async with sqlite_db.deadline(0.01):
            await asyncio.sleep(5)
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert caught.value.refused is False
    assert "no answer in time" in str(caught.value)


async def test_a_connection_error_inside_the_deadline_is_unavailable_and_refused(
    sqlite_db: Database,
) -> None:
    refusal = ConnectionRefusedError("connection refused")
    with pytest.raises(DatabaseUnavailable) as caught:
        async with sqlite_db.deadline():
            raise refusal
    assert caught.value.__cause__ is refusal
    assert caught.value.refused is True


async def test_unavailable_and_other_errors_leave_the_deadline_as_they_are(
    sqlite_db: Database,
) -> None:
    for error in (DatabaseUnavailable("down"), ValueError("not the database's")):
        with pytest.raises(type(error)) as caught:
            async with sqlite_db.deadline():
                raise error
        assert caught.value is error


async def test_a_task_cancelled_inside_a_deadline_is_cancelled_not_unavailable(
    sqlite_db: Database,
) -> None:
    entered = asyncio.Event()

    async def work() -> None:
        async with sqlite_db.deadline(10):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- retryable errors, from real servers ---------------------------------------------


async def test_deadlocks_are_retryable_and_integrity_errors_are_not(pg_db: Database) -> None:
    async with pg_db.sessionmaker() as s:
        s.add_all([User(username="one"), User(username="two")])
        await s.commit()
    a, b = pg_db.sessionmaker(), pg_db.sessionmaker()
    try:
        for s in (a, b):
            await s.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
        await a.execute(text("UPDATE users SET full_name = 'a' WHERE username = 'one'"))
        await b.execute(text("UPDATE users SET full_name = 'b' WHERE username = 'two'"))
        results = await asyncio.gather(
            a.execute(text("UPDATE users SET full_name = 'a' WHERE username = 'two'")),
            b.execute(text("UPDATE users SET full_name = 'b' WHERE username = 'one'")),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1
        assert isinstance(errors[0], DBAPIError)
        assert is_retryable_error(errors[0])
    finally:
        await a.close()
        await b.close()
    async with pg_db.sessionmaker() as s:
        s.add(User(username="ONE"))
        with pytest.raises(IntegrityError) as dup:
            await s.commit()
    assert not is_retryable_error(dup.value)


# -- SQLite transactions ------------------------------------------------------------


async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(
    sqlite_db: Database,
) -> None:
    async with sqlite_db.engine.connect() as conn:
        values = [
            (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        ]
    assert values == ["wal", 1, 5000]


async def test_sqlite_savepoints_belong_to_the_outer_transaction(sqlite_db: Database) -> None:
    async with sqlite_db.sessionmaker() as s:
        s.add(User(username="kept"))
        await s.flush()
        nested = await s.begin_nested()
        s.add(User(username="undone"))
        await s.flush()
        await nested.rollback()
        async with s.begin_nested():
            s.add(User(username="released"))
        await s.commit()
        async with s.begin_nested():
            s.add(User(username="rolled-back-with-outer"))
        await s.rollback()  # a released savepoint must not survive this (pysqlite bug)
    async with sqlite_db.sessionmaker() as s:
        names = set((await s.execute(text("SELECT username FROM users"))).scalars())
    assert names == {"kept", "released"}


async def test_sqlite_concurrent_writers_wait_instead_of_failing(sqlite_db: Database) -> None:
    async def writer(name: str) -> None:
        async with sqlite_db.sessionmaker() as s:
            await s.execute(text("SELECT count(*) FROM users"))  # read first...
            await asyncio.sleep(0.05)  # ...while the others try to write
            s.add(User(username=name))
            await s.commit()

    await asyncio.gather(*(writer(f"writer{i}") for i in range(10)))
    async with sqlite_db.sessionmaker() as s:
        assert (await s.execute(text("SELECT count(*) FROM users"))).scalar() == 10


async def test_sqlite_read_only_work_can_begin_deferred(sqlite_db: Database) -> None:
    writer = sqlite_db.sessionmaker()
    await writer.execute(text("SELECT 1"))  # holds the write lock
    try:
        async with sqlite_db.sessionmaker() as reader:
            await reader.connection(execution_options={SQLITE_BEGIN_OPTION: "DEFERRED"})
            async with sqlite_db.deadline(1):
                assert (await reader.execute(text("SELECT count(*) FROM users"))).scalar() == 0
    finally:
        await writer.close()


# -- per-request session ------------------------------------------------------------


async def test_request_session_is_shared_then_closed_and_uncommitted_work_dropped(
    sqlite_db: Database,
) -> None:
    app = Quart(__name__)
    init_app(app, sqlite_db)
    seen: list[AsyncSession] = []

    @app.post("/users/<name>")
    async def create(name: str) -> Any:
        session = get_session()
        assert get_session() is session
        seen.append(session)
        session.add(User(username=name))
        if name == "committed":
            await session.commit()
        else:
            await session.flush()
        return {"ok": True}

    assert app.extensions["database"] is sqlite_db
    client = app.test_client()
    assert (await client.post("/users/committed")).status_code == 200
    assert (await client.post("/users/forgotten")).status_code == 200
    assert seen[0] is not seen[1]
    assert not any(s.in_transaction() for s in seen)
    assert sqlite_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with sqlite_db.sessionmaker() as s:
        names = set((await s.execute(text("SELECT username FROM users"))).scalars())
    assert names == {"committed"}


async def _pooled_asyncpg_connection(db: Database) -> Any:
    """The asyncpg connection the pool holds (one checkout, given back)."""
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        return raw.dbapi_connection._connection


def _log_queries(connection: Any) -> list[str]:
    queries: list[str] = []
    connection.add_query_logger(lambda record: queries.append(record.query))
    return queries


@pytest.mark.parametrize(
    ("ping_after_idle", "pinged"),
    [(60, False), (0, True)],
    ids=["given-back-a-moment-ago-is-not-pinged", "idle-for-longer-is-pinged-first"],
)
async def test_a_pooled_connection_is_pinged_only_after_it_sat_idle(
    pg_database: str, ping_after_idle: float, pinged: bool
) -> None:
    db = Database(pg_database, timeout=5, pool_size=1, ping_after_idle=ping_after_idle)
    try:
        queries = _log_queries(await _pooled_asyncpg_connection(db))
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT 2"))).scalar_one() == 2
    finally:
        await db.dispose()
    # asyncpg logs the simple-protocol queries: a ping's SELECT 1, then the transaction's
    # BEGIN and ROLLBACK (so the logger is on the connection that was handed out)
    expected = ["SELECT 1", "BEGIN;"] if pinged else ["BEGIN;"]
    assert queries[: len(expected)] == expected


async def test_a_connection_the_server_closed_is_replaced_whatever_its_age(
    pg_database: str,
) -> None:
    # As after a restart: the server ends the session; the pool must not hand out
    # the dead connection because it was given back a moment ago.
    db = Database(pg_database, timeout=5, pool_size=1, ping_after_idle=60)
    try:
        pooled = await _pooled_asyncpg_connection(db)
        admin = Database(pg_database, timeout=5)
        try:
            async with admin.engine.connect() as other:
                await other.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": pooled.get_server_pid()}
                )
        finally:
            await admin.dispose()
        for _ in range(500):  # the loop reads the server's goodbye
            if pooled.is_closed():
                break
            await asyncio.sleep(0.01)
        assert pooled.is_closed()
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT 2"))).scalar_one() == 2
            raw = await conn.get_raw_connection()
            assert raw.dbapi_connection._connection is not pooled
    finally:
        await db.dispose()
