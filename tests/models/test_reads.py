"""RowQuery: prebuilt selects as rows, through SQLAlchemy or straight on asyncpg.

The driver path (asyncpg, no transaction in the session) must give the rows the
SQLAlchemy path gives, in one round trip with no transaction around it, reuse one
prepared statement per connection, and leave the pool whole after server errors,
dropped connections and cancellations. Both paths run on both backends where they
apply; the interfaces the driver path relies on are checked by name.
"""

from __future__ import annotations

import asyncio
import inspect as pyinspect
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, event, func, select
from sqlalchemy.engine import Compiled
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from quart_api.db import Database, DatabaseUnavailable, is_missing_table, metadata
from quart_api.models import User, UTCDateTime, utcnow
from quart_api.models.reads import RowQuery
from tests.statements import sent_to

_users = User.__table__
_COLUMNS = User.shown_columns(show=["email", "is_admin"])
PAGE = RowQuery(
    select(
        *User.table_columns(_COLUMNS),
        select(func.count()).select_from(_users).scalar_subquery().label("total"),
    )
    .order_by(_users.c.created_at, _users.c.id)
    .limit(bindparam("size"))
    .offset(bindparam("offset"))
)
BY_ID = RowQuery(select(*User.table_columns(_COLUMNS)).where(_users.c.id == bindparam("id")))
BACKEND_PID = RowQuery(select(func.pg_backend_pid()))
SLEEP = RowQuery(select(func.pg_sleep(bindparam("seconds", type_=sqlalchemy.Float))))


async def _add_users(database: Database, count: int) -> list[User]:
    start = utcnow() - timedelta(hours=1)
    users = [
        User(
            username=f"user{i}",
            email=f"user{i}@example.org" if i % 2 else None,
            full_name=None if i % 3 else f"User {i}",
            is_admin=i == 1,
            created_at=start + timedelta(seconds=i),
            modified_at=start + timedelta(seconds=i),
        )
        for i in range(count)
    ]
    async with database.sessionmaker() as session:
        session.add_all(users)
        await session.commit()
    return users


@pytest.fixture
async def one_connection(pg_database: str) -> AsyncIterator[Database]:
    """PostgreSQL with a pool of one connection: every fetch reuses it while it lives."""
    db = Database(pg_database, timeout=10, pool_size=1)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield db
    finally:
        await db.dispose()


@contextmanager
def cursor_statements(database: Database) -> Iterator[list[tuple[str, Compiled | None]]]:
    """Every statement SQLAlchemy executes, with the compiled form it used."""
    seen: list[tuple[str, Compiled | None]] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        context = _args[-2]
        seen.append((statement, context.compiled))

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _plain(rows: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in rows]


async def test_rows_are_those_sqlalchemy_gives_for_the_same_select(database: Database) -> None:
    await _add_users(database, 7)
    async with database.sessionmaker() as session:
        expected = _plain((await session.execute(PAGE.statement, {"size": 4, "offset": 2})).all())
    async with database.sessionmaker() as session:
        rows = await PAGE.fetch(database, session, size=4, offset=2)  # asyncpg: the driver path
    assert _plain(rows) == expected
    assert len(expected) == 4
    assert [row[-1] for row in rows] == [7] * 4


async def test_rows_serialize_exactly_as_to_dict_serializes_the_objects(
    database: Database,
) -> None:
    users = await _add_users(database, 5)
    serialize = User.row_serializer(_COLUMNS, show=["email", "is_admin"])
    async with database.sessionmaker() as session:
        rows = await PAGE.fetch(database, session, size=10, offset=0)
        loaded = (await session.execute(select(User).order_by(User.created_at))).scalars().all()
    assert [serialize(row) for row in rows] == [
        user.to_dict(show=["email", "is_admin"]) for user in loaded
    ]
    assert [serialize(row)["id"] for row in rows] == [str(user.id) for user in users]


async def test_rows_for_rendering_serialize_as_processed_rows_do_without_their_processors(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the driver path the UTCDateTime processors are left out, and the JSON is the same."""
    await _add_users(database, 5)
    serialize = User.row_serializer(_COLUMNS, show=["email", "is_admin"])
    rendered = RowQuery(PAGE.statement, for_rendering=True)
    async with database.sessionmaker() as session:
        expected = [serialize(row) for row in await PAGE.fetch(database, session, size=9, offset=0)]
    processed = 0
    process = UTCDateTime.process_result_value

    def counting(self: UTCDateTime, value: Any, dialect: Any) -> Any:
        nonlocal processed
        processed += 1
        return process(self, value, dialect)

    monkeypatch.setattr(UTCDateTime, "process_result_value", counting)
    async with database.sessionmaker() as session:
        rows = await rendered.fetch(database, session, size=9, offset=0)
    assert [serialize(row) for row in rows] == expected
    assert len(expected) == 5
    if database.engine.dialect.driver == "asyncpg":
        assert processed == 0
    for row in rows:
        assert all(v.tzinfo is UTC for v in row if isinstance(v, datetime))


async def test_without_a_session_the_read_borrows_and_gives_back_a_connection(
    database: Database,
) -> None:
    await _add_users(database, 3)
    async with database.sessionmaker() as session:
        expected = _plain(await PAGE.fetch(database, session, size=2, offset=1))
    rows = await PAGE.fetch(database, None, size=2, offset=1)
    assert _plain(rows) == expected
    assert database.engine.sync_engine.pool.checkedout() == 0


async def test_the_driver_path_is_one_statement_without_a_transaction(
    one_connection: Database,
) -> None:
    database = one_connection
    await _add_users(database, 3)
    await database.dispose()  # the next connection opens while counting
    with sent_to(database) as sent:
        async with database.sessionmaker() as session:
            await PAGE.fetch(database, session, size=2, offset=0)  # connects
        sent.clear()
        async with database.sessionmaker() as session:
            await PAGE.fetch(database, session, size=2, offset=1)  # the pooled connection, pinged
    assert sent.statements() == [PAGE._driver_statement(database.engine.dialect).sql]
    assert sent.transaction_control() == []
    assert sent.cursor == []  # not through SQLAlchemy's cursor


async def test_the_prepared_statement_is_reused_by_every_fetch_on_a_connection(
    one_connection: Database,
) -> None:
    database = one_connection
    await _add_users(database, 3)
    for offset in range(5):
        async with database.sessionmaker() as session:
            assert len(await PAGE.fetch(database, session, size=1, offset=offset % 3)) == 1
    sql = PAGE._driver_statement(database.engine.dialect).sql
    raw: PoolProxiedConnection = await database.engine.raw_connection()
    try:
        prepared = await raw.driver_connection.fetch(
            "SELECT generic_plans + custom_plans AS runs FROM pg_prepared_statements "
            "WHERE statement = $1",
            sql,
        )
    finally:
        await greenlet_spawn(raw.close)
    assert [record["runs"] for record in prepared] == [5]  # prepared once, run five times


async def test_the_sqlalchemy_path_reuses_one_compiled_statement(database: Database) -> None:
    await _add_users(database, 3)
    with cursor_statements(database) as statements:
        for offset in (0, 1, 2):
            async with database.sessionmaker() as session, session.begin():
                await PAGE.fetch(database, session, size=1, offset=offset)  # in a transaction: Core
    pages = [compiled for sql, compiled in statements if "total" in sql]
    assert len(pages) == 3
    assert pages[0] is not None
    assert all(compiled is pages[0] for compiled in pages)  # the compiled cache hit


async def test_a_server_error_is_a_dbapi_error_and_the_connection_stays_pooled(
    one_connection: Database,
) -> None:
    database = one_connection
    missing = RowQuery(select(Table("no_such_table", MetaData(), Column("x", Integer)).c.x))
    async with database.sessionmaker() as session:
        before = (await BACKEND_PID.fetch(database, session))[0][0]
    async with database.sessionmaker() as session:
        with pytest.raises(DBAPIError) as caught:
            await missing.fetch(database, session)
    assert is_missing_table(caught.value)
    assert not caught.value.connection_invalidated
    async with database.sessionmaker() as session:
        assert (await BACKEND_PID.fetch(database, session))[0][0] == before


async def test_a_connection_dropped_mid_query_is_invalidated_and_reported_unavailable(
    one_connection: Database, pg_database: str
) -> None:
    database = one_connection
    async with database.sessionmaker() as session:
        victim = (await BACKEND_PID.fetch(database, session))[0][0]

    async def sleep_on_the_pooled_connection() -> None:
        async with database.deadline(), database.sessionmaker() as session:
            await SLEEP.fetch(database, session, seconds=5)

    sleeping = asyncio.create_task(sleep_on_the_pooled_connection())
    killer = await asyncpg.connect(pg_database.replace("postgresql+asyncpg", "postgresql"))
    try:
        for _ in range(200):  # bounded: until the sleep is running on the server
            active = await killer.fetchval(
                "SELECT state = 'active' FROM pg_stat_activity WHERE pid = $1", victim
            )
            if active:
                break
            await asyncio.sleep(0.01)
        await killer.execute("SELECT pg_terminate_backend($1)", victim)
    finally:
        await killer.close()
    with pytest.raises(DatabaseUnavailable):
        await sleeping
    async with database.sessionmaker() as session:
        assert (await BACKEND_PID.fetch(database, session))[0][0] != victim  # a fresh connection


async def test_a_fetch_cancelled_mid_query_drops_its_connection_for_a_fresh_one(
    one_connection: Database,
) -> None:
    database = one_connection
    async with database.sessionmaker() as session:
        first = (await BACKEND_PID.fetch(database, session))[0][0]
    with pytest.raises(DatabaseUnavailable):
        async with database.deadline(0.2), database.sessionmaker() as session:
            await SLEEP.fetch(database, session, seconds=5)
    pool = database.engine.sync_engine.pool
    assert pool.checkedout() == 0  # given back (dropped), not leaked
    async with database.sessionmaker() as session:
        assert (await BACKEND_PID.fetch(database, session))[0][0] != first


async def test_inside_a_transaction_the_fetch_joins_the_sessions_snapshot(
    database: Database,
) -> None:
    await _add_users(database, 2)
    async with database.sessionmaker() as session, session.begin():
        session.add(User(username="uncommitted"))
        await session.flush()
        rows = await PAGE.fetch(database, session, size=10, offset=0)
    assert [row[-1] for row in rows] == [3] * 3  # sees the session's own uncommitted row


async def test_a_uuid_parameter_binds_on_both_paths(database: Database) -> None:
    users = await _add_users(database, 2)
    async with database.sessionmaker() as session:
        rows = await BY_ID.fetch(database, session, id=users[1].id)
        missing = await BY_ID.fetch(database, session, id=uuid.uuid4())
    assert [str(row[0]) for row in rows] == [str(users[1].id)]
    assert list(missing) == []


async def test_an_expanding_parameter_is_refused_by_name_on_the_driver(
    one_connection: Database,
) -> None:
    in_list = RowQuery(select(_users.c.id).where(_users.c.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(TypeError, match="'ids'"):
        await in_list.fetch(one_connection, None, ids=[uuid.uuid4()])


def test_the_interfaces_the_driver_path_relies_on_are_there() -> None:
    """SQLAlchemy 2.0.30-2.1 and asyncpg 0.29-0.32: these fail by name if one moves."""
    assert pyinspect.iscoroutinefunction(greenlet_spawn)
    assert callable(sqlalchemy.Engine.raw_connection)
    for name in ("invalidate", "close"):  # driver_connection: on an instance, below
        assert callable(getattr(PoolProxiedConnection, name)), name
    compiled = PAGE.statement.compile(dialect=_asyncpg_dialect())
    assert compiled.positiontup == ["size", "offset"]
    assert compiled.string.endswith("LIMIT $1 OFFSET $2")
    for name in ("fetch", "is_closed", "add_query_logger"):
        assert callable(getattr(asyncpg.Connection, name)), name
    assert hasattr(asyncpg.PostgresError, "sqlstate")


async def test_the_driver_connection_is_an_asyncpg_connection(one_connection: Database) -> None:
    raw = await one_connection.engine.raw_connection()
    try:
        assert isinstance(raw.driver_connection, asyncpg.Connection)
    finally:
        await greenlet_spawn(raw.close)


def _asyncpg_dialect() -> sqlalchemy.Dialect:
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    return dialect()


async def test_sqlite_fetches_through_the_sessions_connection(tmp_path: Any) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'reads.db'}", timeout=5)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        await _add_users(database, 3)
        with cursor_statements(database) as statements:
            async with database.reader_sessionmaker() as session:
                rows = await PAGE.fetch(database, session, size=2, offset=1)
                assert session.in_transaction()
        assert len(rows) == 2
        assert [sql for sql, _ in statements if sql.startswith("SELECT")] == [
            str(PAGE.statement.compile(dialect=database.engine.dialect))
        ]
    finally:
        await database.dispose()
