"""Read-only selects as plain rows, on the shortest path the driver offers.

A :class:`RowQuery` wraps a Core ``select`` built once, at import, with named bind
parameters, and runs it one of two ways:

- **On the session's connection** (SQLAlchemy Core), when the caller's session
  already holds a transaction (a read then sees the same snapshot as the request's
  other work), and on every driver but asyncpg (the caller's session, or a reader
  session of its own). The statement object is the same every time, so
  SQLAlchemy's compiled cache hits, and the driver's prepared statement (asyncpg's
  adapter keeps a cache per connection) is reused.
- **On the driver** (asyncpg), otherwise: no session at all (creating and closing
  one costs more than the driver's work here); one pooled connection is borrowed for
  the one statement, which runs in autocommit (a single statement is its own
  consistent snapshot, so no ``BEGIN``/``ROLLBACK`` round trips), through asyncpg's
  own ``fetch``. The SQL is compiled once per dialect, and asyncpg's statement cache
  prepares it once per connection. The column types' bind and result processors
  are applied as SQLAlchemy applies them, so rows hold the same values either way.
  This skips SQLAlchemy's execution context, cursor and result wrapping, which cost
  more than the query itself for a page of rows.

The driver path reaches below SQLAlchemy's execution layer through public
interfaces only (``Engine.raw_connection``, ``PoolProxiedConnection.driver_connection``
and ``invalidate``, ``asyncpg.Connection.fetch``), plus SQLAlchemy's
``greenlet_spawn`` to run the pool's synchronous checkout, pre-ping and return;
checked on SQLAlchemy 2.0.30-2.1 and asyncpg 0.29-0.32
(``tests/models/test_reads.py`` fails by name if one moves). Errors leave it as
SQLAlchemy's do: a ``DBAPIError`` carrying the driver's exception (and its
SQLSTATE), with ``connection_invalidated`` set when the connection was dropped, so
``Database.deadline()`` tells an unavailable database from a bad query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from sqlalchemy import Dialect, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util import greenlet_spawn

from quart_api.db import Database
from quart_api.models.base import UTCDateTime

__all__ = ["RowQuery"]

#: SQLSTATE classes after which a connection is not reused: connection exceptions
#: (08) and operator intervention (57P: the server is shutting down or restarting).
_DEAD_CONNECTION_SQLSTATES: Final = ("08", "57P")

Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A ``select`` compiled for asyncpg: its SQL and how to bind and read its values."""

    sql: str
    names: tuple[str, ...]  # bind parameter names, in ``$1, $2, ...`` order
    binders: tuple[Processor | None, ...]
    readers: tuple[tuple[int, Processor], ...]  # (column index, result processor), where any

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values = list(map(params.__getitem__, self.names))
        if not any(self.binders):
            return values
        return [
            v if bind is None else bind(v) for v, bind in zip(values, self.binders, strict=True)
        ]

    def rows(self, records: list[asyncpg.Record]) -> Sequence[Sequence[Any]]:
        readers = self.readers
        if not readers or not records:
            return records
        # Column by column: each reader maps its column, and the rows are put back
        # together, all in C but the readers themselves.
        columns = list(zip(*records, strict=True))
        for index, read in readers:
            columns[index] = tuple(map(read, columns[index]))
        return list(zip(*columns, strict=True))


class RowQuery:
    """A prebuilt read-only ``select`` run as plain rows (see the module docstring).

    Args:
        statement: a Core ``select`` of table columns (no ORM entities: rows, not
            objects), its variable parts as named ``bindparam()``s of plain values
            (no expanding ``IN`` lists: a statement with them is refused on the
            driver path with a ``TypeError`` naming them).
        for_rendering: the rows are only ever rendered by a ``row_serializer``
            (``BaseModel.row_serializer``), which gives every datetime in UTC
            whatever its ``tzinfo``, naive ones as UTC: the driver path then leaves
            out the result processors of ``UTCDateTime`` columns, which only set that
            ``tzinfo`` (asyncpg gives ``timestamptz`` values in UTC already).
    """

    __slots__ = ("_compiled", "for_rendering", "statement")

    def __init__(self, statement: Select[Any], *, for_rendering: bool = False) -> None:
        self.statement = statement
        self.for_rendering = for_rendering
        self._compiled: dict[Dialect, _DriverStatement] = {}

    def __repr__(self) -> str:
        return f"RowQuery({str(self.statement)!r})"

    async def fetch(
        self, database: Database, session: AsyncSession | None, /, **params: Any
    ) -> Sequence[Sequence[Any]]:
        """Every row of the statement with ``params`` bound, as index-addressable rows.

        Args:
            database: where to read when ``session`` holds no transaction.
            session: the caller's session, if it has one (the request's, see
                ``quart_api.db.current_session``): a read inside its transaction
                shares its snapshot. With none on SQLite, a reader session of
                ``database`` is opened for the read and closed after.
        """
        if session is not None and session.in_transaction():
            return await self._fetch_on_session(session, params)
        if database.engine.dialect.driver == "asyncpg":
            return await self._fetch_on_driver(database.engine, params)
        if session is not None:
            return await self._fetch_on_session(session, params)
        async with database.reader_sessionmaker() as own:
            return await self._fetch_on_session(own, params)

    async def _fetch_on_session(
        self, session: AsyncSession, params: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        connection = await session.connection()
        rows: Sequence[Sequence[Any]] = (await connection.execute(self.statement, params)).all()
        return rows

    async def _fetch_on_driver(
        self, engine: AsyncEngine, params: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        compiled = self._driver_statement(engine.dialect)
        arguments = compiled.arguments(params)
        # Checkout runs the pool's pre-ping (and connects when needed) in a greenlet.
        pooled = await greenlet_spawn(engine.sync_engine.raw_connection)
        driver: asyncpg.Connection = pooled.driver_connection
        try:
            records = await driver.fetch(compiled.sql, *arguments)
        except BaseException as error:
            dead = not _is_healthy_after(error, driver)
            if dead:
                # Cancelled mid-query, timed out, or disconnected: the connection's
                # state is unknown, so it is dropped, never handed to the next request.
                await greenlet_spawn(pooled.invalidate, error)
            else:
                await greenlet_spawn(pooled.close)
            if isinstance(error, Exception):
                raise DBAPIError(
                    compiled.sql, arguments, error, connection_invalidated=dead
                ) from error
            raise
        await greenlet_spawn(pooled.close)
        return compiled.rows(records)

    def _driver_statement(self, dialect: Dialect) -> _DriverStatement:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = _compile(
                self.statement, dialect, (UTCDateTime,) if self.for_rendering else ()
            )
        return compiled


def _compile(
    statement: Select[Any], dialect: Dialect, unread: tuple[type, ...]
) -> _DriverStatement:
    """``statement`` for asyncpg; columns of the ``unread`` types get no result processor."""
    compiled = statement.compile(dialect=dialect)
    if compiled.post_compile_params:
        raise TypeError(
            f"RowQuery cannot run {statement!s} on the driver: its parameters "
            f"{sorted(p.key for p in compiled.post_compile_params)} are rendered into the SQL "
            f"at execution (expanding IN or literal_execute); bind plain values instead"
        )
    names = tuple(compiled.positiontup or ())
    binders = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    readers = tuple(
        (index, read)
        for index, column in enumerate(statement.selected_columns)
        if not isinstance(column.type, unread)
        and (read := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
    )
    return _DriverStatement(compiled.string, names, binders, readers)


def _is_healthy_after(error: BaseException, connection: asyncpg.Connection) -> bool:
    """True when the server answered ``error`` and the connection can serve the next query."""
    if not isinstance(error, asyncpg.PostgresError) or connection.is_closed():
        return False
    return not str(error.sqlstate or "").startswith(_DEAD_CONNECTION_SQLSTATES)
