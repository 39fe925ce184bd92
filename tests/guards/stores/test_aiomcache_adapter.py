"""What the guards use of aiomcache's pool internals is still there, by name."""

from __future__ import annotations

import inspect

from aiomcache.pool import Connection, MemcachePool

from quart_api.guards.stores import _aiomcache_adapter as aiomcache


def test_aiomcache_pool_still_has_in_use_and_do_close() -> None:
    pool = MemcachePool("127.0.0.1", 1, minsize=1, maxsize=1)
    assert isinstance(pool._in_use, set)
    assert callable(pool._do_close)
    assert list(inspect.signature(pool._do_close).parameters) == ["conn"]


def test_aiomcache_pool_still_acquires_releases_and_clears() -> None:
    assert inspect.iscoroutinefunction(MemcachePool.acquire)
    assert not inspect.iscoroutinefunction(MemcachePool.release)
    assert inspect.iscoroutinefunction(MemcachePool.clear)
    assert {"minsize", "maxsize"} <= set(inspect.signature(MemcachePool).parameters)


def test_aiomcache_connections_are_still_reader_writer_pairs() -> None:
    assert Connection._fields == ("reader", "writer")


async def test_discard_frees_the_pool_slot_of_a_connection_it_closes(
    memcached_servers: str,
) -> None:
    host, port = memcached_servers.rsplit(":", 1)
    pool = aiomcache.new_pool(host, int(port), 1)
    conn = await aiomcache.acquire(pool)
    assert pool._in_use == {conn}
    aiomcache.discard(pool, conn)
    assert pool._in_use == set()
    assert conn.writer.is_closing()
    again = await aiomcache.acquire(pool)  # the slot is free: a new connection opens
    assert again is not conn
    aiomcache.discard(pool, again)
