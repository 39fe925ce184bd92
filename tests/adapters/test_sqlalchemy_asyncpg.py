"""The SQLAlchemy asyncpg internals `quart_api.adapters.sqlalchemy_asyncpg` relies on.

Each test names the internal it proves is still there and still called, on a real
PostgreSQL: a SQLAlchemy release that moves one fails the test of that name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from quart_api.adapters.sqlalchemy_asyncpg import (
    asyncpg_connection,
    in_transaction,
    replace_close,
    replace_ping,
    replace_terminate,
)


@pytest.fixture
async def engine(pg_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_database, pool_size=1, max_overflow=0, pool_pre_ping=True)
    yield engine
    await engine.dispose()


def count_connects(engine: AsyncEngine) -> list[object]:
    connects: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda dbapi, _record: connects.append(dbapi))
    return connects


async def test_sqlalchemy_asyncpg_adapter_still_has_connection_and_transaction(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        dbapi_connection = (await conn.get_raw_connection()).dbapi_connection
        assert isinstance(asyncpg_connection(dbapi_connection), asyncpg.Connection)
        await conn.execute(text("SELECT 1"))
        assert in_transaction(dbapi_connection)
        await conn.commit()
        assert not in_transaction(dbapi_connection)


async def test_sqlalchemy_asyncpg_adapter_still_pings_through_do_ping(engine: AsyncEngine) -> None:
    pings: list[tuple[Any, bool]] = []

    async def ping(connection: Any, transaction_open: bool) -> None:
        pings.append((connection, transaction_open))
        await connection.fetchrow(";")

    replace_ping(engine, ping)
    async with engine.connect() as conn:  # a new connection: not pinged
        await conn.execute(text("SELECT 1"))
    async with engine.connect() as conn:  # the pooled one: pinged at checkout
        await conn.execute(text("SELECT 1"))

    assert len(pings) == 1
    assert isinstance(pings[0][0], asyncpg.Connection)
    assert pings[0][1] is False


async def test_sqlalchemy_asyncpg_adapter_still_reconnects_after_a_failed_ping_via_handle_exception(
    engine: AsyncEngine,
) -> None:
    connects = count_connects(engine)

    async def broken(connection: Any, transaction_open: bool) -> None:
        connection.terminate()  # as when the server drops it
        await connection.fetchrow(";")  # asyncpg: "connection is closed"

    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    replace_ping(engine, broken)
    async with engine.connect() as conn:  # the ping fails: the pool connects anew
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1

    assert len(connects) == 2


async def test_sqlalchemy_asyncpg_adapter_still_drops_invalidated_connections_through_do_terminate(
    engine: AsyncEngine,
) -> None:
    terminated: list[Any] = []

    def terminate(connection: Any) -> None:
        terminated.append(connection)
        connection.terminate()

    replace_terminate(engine, terminate)
    async with engine.connect() as conn:
        driver = asyncpg_connection((await conn.get_raw_connection()).dbapi_connection)
        await conn.invalidate()

    assert terminated == [driver]
    assert driver.is_closed()


async def test_sqlalchemy_asyncpg_adapter_still_closes_connections_it_drops_through_do_close(
    pg_database: str,
) -> None:
    engine = create_async_engine(pg_database, pool_size=1, max_overflow=1)
    closed: list[Any] = []

    def close(connection: Any) -> None:
        closed.append(connection)
        connection.terminate()

    replace_close(engine, close)
    try:
        async with engine.connect() as first, engine.connect() as second:
            drivers = [
                asyncpg_connection((await conn.get_raw_connection()).dbapi_connection)
                for conn in (first, second)
            ]
        assert len(closed) == 1  # the overflow connection; the other is pooled
        assert closed[0] in drivers
        assert closed[0].is_closed()
        kept = next(d for d in drivers if d is not closed[0])
        assert not kept.is_closed()
        await engine.dispose()  # and every pooled one
        assert closed[1:] == [kept]
        assert kept.is_closed()
    finally:
        await engine.dispose()
