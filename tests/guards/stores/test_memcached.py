"""What only the memcached store has: its own timeouts, connection hygiene, key spreading."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time

import aiomcache.exceptions
import pytest
from aiomcache.pool import Connection

from quart_api.guards.stores import MemcachedCacheStore, StoreError, StoreTimeout
from quart_api.guards.stores.memcached import _ERRORS, _reply, _Stale
from quart_api.testing import free_port
from tests.guards.stores.conftest import NEVER_HANGS, first_answer


async def test_memcached_timeout_closes_the_connection(memcached_server, memcached_servers) -> None:
    """A late reply must never be read by the next call (one connection: it would be)."""
    store = MemcachedCacheStore(memcached_servers, timeout=0.1, pool_size=1)
    await store.set(b"k1", b"v1", 60)
    await store.set(b"k2", b"v2", 60)
    memcached_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreTimeout):
            await store.get(b"k1")
        assert time.monotonic() - started < NEVER_HANGS
    finally:
        memcached_server.resume()
    assert await first_answer(lambda _: store.get(b"k2")) == b"v2"  # not k1's late reply
    assert await first_answer(lambda _: store.get(b"k1")) == b"v1"
    await store.close()


async def test_cancelled_call_closes_the_connection(memcached_server, memcached_servers) -> None:
    store = MemcachedCacheStore(memcached_servers, timeout=5.0, pool_size=1)
    await store.set(b"k1", b"v1", 60)
    await store.set(b"k2", b"v2", 60)
    memcached_server.pause()
    try:
        pending = asyncio.create_task(store.get(b"k1"))
        await asyncio.sleep(0.05)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    finally:
        memcached_server.resume()
    assert await store.get(b"k2") == b"v2"
    await store.close()


async def test_server_killed_mid_call_raises_store_error(
    memcached_server, memcached_servers
) -> None:
    store = MemcachedCacheStore(memcached_servers, timeout=2.0)
    await store.ping()
    memcached_server.pause()
    try:
        pending = asyncio.create_task(store.incr(b"n", 60))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        os.kill(memcached_server.pid, signal.SIGKILL)
        with pytest.raises(StoreError) as caught:
            await pending
        assert not isinstance(caught.value, StoreTimeout)
        assert time.monotonic() - started < NEVER_HANGS
    finally:
        memcached_server.stop()
        memcached_server.start()
    await store.close()


async def test_closed_socket_is_an_error_not_an_endless_loop() -> None:
    """aiomcache reads one-line replies in a loop that spins on EOF; ours raises."""
    reader = asyncio.StreamReader()
    reader.feed_eof()
    with pytest.raises(_Stale):
        await _reply(Connection(reader, None))  # type: ignore[arg-type]
    partial = asyncio.StreamReader()
    partial.feed_data(b"STOR")
    partial.feed_eof()
    with pytest.raises(ConnectionResetError):
        await _reply(Connection(partial, None))  # type: ignore[arg-type]


async def test_store_down_raises_store_error_quickly(memcached_server, memcached_servers) -> None:
    store = MemcachedCacheStore(memcached_servers, timeout=0.05)
    await store.set(b"k", b"v", 60)
    memcached_server.stop()
    try:
        for call in (lambda: store.get(b"k"), lambda: store.set(b"k", b"v", 1), store.ping):
            started = time.monotonic()
            with pytest.raises(StoreError):
                await call()
            assert time.monotonic() - started < NEVER_HANGS
    finally:
        memcached_server.start()
    await store.close()


async def test_store_reconnects_after_restart(memcached_server, memcached_servers) -> None:
    store = MemcachedCacheStore(memcached_servers, timeout=1.0)
    await store.set(b"k", b"v", 60)
    memcached_server.restart()  # every pooled socket is now dead
    assert await store.get(b"k") is None  # a new, empty server: no error
    assert await store.set(b"k", b"again", 60)
    assert await store.get(b"k") == b"again"
    await store.close()


async def test_skipped_value_costs_no_round_trip() -> None:
    nobody = MemcachedCacheStore(f"127.0.0.1:{free_port()}", timeout=0.05)
    assert await nobody.set(b"big", b"x" * (nobody.max_item_bytes + 1), 60) is False
    with pytest.raises(StoreError):
        await nobody.set(b"small", b"x", 60)


async def test_more_callers_than_connections_wait_their_turn(memcached_servers) -> None:
    store = MemcachedCacheStore(memcached_servers, timeout=1.0, pool_size=2)
    await store.set(b"k", b"v", 60)
    assert await asyncio.gather(*(store.get(b"k") for _ in range(100))) == [b"v"] * 100
    await store.close()


async def test_keys_spread_over_two_servers_by_rendezvous_hashing(
    memcached_servers, memcached_server2
) -> None:
    memcached_server2.flush()
    both = MemcachedCacheStore(f"{memcached_servers},{memcached_server2.address}", timeout=1.0)
    first = MemcachedCacheStore(memcached_servers, timeout=1.0)
    second = MemcachedCacheStore(memcached_server2.address, timeout=1.0)
    keys = [f"page:/users?page={i}".encode() for i in range(200)]
    for key in keys:
        await both.set(key, key, 60)
    on_first = {key for key in keys if await first.get(key) == key}
    on_second = {key for key in keys if await second.get(key) == key}
    assert on_first.isdisjoint(on_second)
    assert on_first | on_second == set(keys)
    assert 60 < len(on_first) < 140  # an even spread, give or take
    # Stable across processes: placement depends only on server names and key bytes.
    again = MemcachedCacheStore(f"{memcached_servers},{memcached_server2.address}")
    assert [again.server_index(k) for k in keys] == [both.server_index(k) for k in keys]
    # Rendezvous: a third server takes only keys it wins; no key moves between the others.
    grown = MemcachedCacheStore(f"{memcached_servers},{memcached_server2.address},10.0.0.9:1")
    moved = [k for k in keys if grown.server_index(k) != both.server_index(k)]
    assert all(grown.server_index(k) == 2 for k in moved)
    assert 30 < len(moved) < 110
    for store in (both, first, second):
        await store.close()


def _client_errors() -> list[BaseException]:
    mods = [
        cls("boom")
        for _, cls in inspect.getmembers(aiomcache.exceptions, inspect.isclass)
        if issubclass(cls, Exception)
    ]
    return [
        *mods,
        ConnectionResetError(),
        ConnectionRefusedError(),
        BrokenPipeError(),
        OSError("unreachable"),
        asyncio.IncompleteReadError(b"", 10),
        asyncio.LimitOverrunError("line too long", 0),
        ValueError("garbled reply"),
        TimeoutError(),
    ]


@pytest.mark.parametrize("exc", _client_errors(), ids=lambda e: type(e).__name__)
def test_every_client_error_is_mapped(exc: BaseException) -> None:
    expected = StoreTimeout if isinstance(exc, TimeoutError) else StoreError
    with pytest.raises(expected) as caught, _ERRORS:
        raise exc
    assert caught.value.__cause__ is exc


def test_bugs_are_not_mapped() -> None:
    with pytest.raises(TypeError), _ERRORS:
        raise TypeError("a bug stays a bug")


def _stat(address: str, name: str) -> int:
    """One counter of memcached's own `stats`, read over a plain socket."""
    import socket

    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            data += sock.recv(65536)
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    raise KeyError(name)


async def test_concurrent_lookups_of_a_hot_key_share_one_fetch(memcached_servers) -> None:
    store = MemcachedCacheStore(memcached_servers)
    await store.set(b"hot", b"entry", 60)
    before = _stat(memcached_servers, "cmd_get")
    values = await asyncio.gather(*(store.get(b"hot") for _ in range(50)))
    assert values == [b"entry"] * 50
    assert _stat(memcached_servers, "cmd_get") - before == 1
    assert store.gets == 1
    await store.close()


async def test_concurrent_lookups_of_many_keys_are_one_round_trip(memcached_servers) -> None:
    store = MemcachedCacheStore(memcached_servers, pool_size=1)
    for i in range(20):
        await store.set(b"k%d" % i, b"v%d" % i, 60)
    before_keys = _stat(memcached_servers, "cmd_get")
    values = await asyncio.gather(*(store.get(b"k%d" % i) for i in range(20)), store.get(b"none"))
    assert values == [b"v%d" % i for i in range(20)] + [None]
    assert _stat(memcached_servers, "cmd_get") - before_keys == 21  # each key counted once
    assert store.get_round_trips == 1
    await store.close()


async def test_a_cancelled_lookup_does_not_cancel_the_others(memcached_servers) -> None:
    store = MemcachedCacheStore(memcached_servers)
    await store.set(b"k", b"v", 60)
    first = asyncio.create_task(store.get(b"k"))
    second = asyncio.create_task(store.get(b"k"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == b"v"
    with pytest.raises(asyncio.CancelledError):
        await first
    await store.close()
