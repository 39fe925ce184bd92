"""What only the Redis counter store has: scripts, batching, TTLs, faults, the cluster."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as sync_redis
from redis import exceptions as rx

from quart_api.guards.stores import (
    BanCheck,
    Failure,
    Limit,
    RedisCounterStore,
    StoreError,
    StoreTimeout,
)
from quart_api.guards.stores import _redis_adapter as redis_py
from quart_api.guards.stores._redis_link import _ERRORS
from tests.guards.stores.conftest import NEVER_HANGS, first_answer

MINUTE = 60_000


@pytest.fixture(params=["redis", "cluster"])
def any_redis(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[sync_redis.Redis]]]:
    """(url, a sync client per server) of a flushed Redis or Redis Cluster."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        url, nodes = request.getfixturevalue("redis_url"), [server]
    else:
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        url, nodes = cluster.url, cluster.nodes
    clients = [node.client() for node in nodes]
    yield url, clients
    for client in clients:
        client.close()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisCounterStore]:
    s = RedisCounterStore(redis_url, timeout=1.0)
    yield s
    await s.close()


async def test_every_key_has_a_ttl(any_redis) -> None:
    url, clients = any_redis
    store = RedisCounterStore(url, timeout=1.0)
    await store.check([Limit("rl:{a}", 5, MINUTE), Limit("rl:{b}", 5, 1000)], [])
    await store.check([Limit("rl:{a}", 5, MINUTE, cost=0)], [])  # charges nothing
    escalating = Failure("f:{c}", "b:{c}", 2, MINUTE, "o:{c}", 10 * MINUTE)
    for _ in range(3):
        await store.record_failure(escalating)
    await store.close()
    keys = {key: client.pttl(key) for client in clients for key in client.keys("*")}
    assert set(keys) == {b"rl:{a}", b"rl:{b}", b"f:{c}", b"b:{c}", b"o:{c}"}
    assert all(ttl > 0 for ttl in keys.values()), keys


async def test_tat_key_lives_exactly_as_long_as_the_debt(
    store: RedisCounterStore, redis_server
) -> None:
    await store.check([Limit("rl:x", 4, 1000)], [])
    with redis_server.client() as client:
        assert 240 <= client.pttl("rl:x") <= 250  # one request of four: a quarter window


async def test_noscript_after_script_flush_is_reloaded(any_redis) -> None:
    url, clients = any_redis
    store = RedisCounterStore(url, timeout=1.0)
    lim = Limit("rl:{a}", 5, MINUTE)
    await store.check([lim], [])
    for client in clients:
        client.script_flush()
    assert (await store.check([lim], [])).limits[0].remaining == 3
    assert (await store.record_failure(Failure("f:{c}", "b:{c}", 3, MINUTE))).failures == 1
    await store.close()


async def test_concurrent_checks_share_one_round_trip(
    store: RedisCounterStore, redis_server
) -> None:
    await store.check([Limit("warm", 1, MINUTE)], [])  # loads the script
    with redis_server.client() as client:
        client.config_resetstat()
    store.calls = store.round_trips = 0
    limits = [
        [Limit(f"rl:{i}:ip", 10, MINUTE), Limit(f"rl:{i}:user", 10, MINUTE)] for i in range(100)
    ]
    results = await asyncio.gather(
        *(store.check(lims, [BanCheck(f"f:{i}", f"b:{i}")]) for i, lims in enumerate(limits))
    )
    assert all(r.allowed for r in results)
    assert store.calls == 100
    assert store.round_trips <= 2, store.round_trips
    with redis_server.client() as client:
        stats = client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == store.calls  # no retries, no extra calls


async def test_unbatched_store_makes_one_round_trip_per_call(redis_url: str) -> None:
    store = RedisCounterStore(redis_url, batch=False, timeout=1.0)
    await store.check([Limit("warm", 1, MINUTE)], [])
    store.calls = store.round_trips = 0
    await asyncio.gather(*(store.check([Limit(f"rl:{i}", 5, MINUTE)], []) for i in range(20)))
    assert store.calls == store.round_trips == 20
    await store.close()


async def test_pool_wait_is_not_a_store_error(redis_url: str) -> None:
    """A burst bigger than the pool queues for a connection instead of failing open."""
    store = RedisCounterStore(redis_url, batch=False, max_connections=1, timeout=0.05)
    lim = Limit("rl:burst", 10, MINUTE)
    results = await asyncio.gather(*(store.check([lim], []) for _ in range(60)))
    assert sum(r.allowed for r in results) == 10
    await store.close()


async def test_timed_out_call_never_crosses_replies(redis_server, redis_url: str) -> None:
    store = RedisCounterStore(redis_url, batch=False, max_connections=1, timeout=0.1)
    busy = Limit("rl:busy", 5, MINUTE)
    for _ in range(3):
        await store.check([busy], [])
    redis_server.pause()
    try:
        for _ in range(3):  # later calls open a new connection: bounded the same
            started = time.monotonic()
            with pytest.raises(StoreTimeout):
                await store.check([busy], [])
            assert time.monotonic() - started < NEVER_HANGS
    finally:
        redis_server.resume()
    assert await _fresh_remaining(store, "rl:fresh") == 4  # its own reply, not rl:busy's late one
    await store.close()


async def test_store_down_raises_store_error_quickly(redis_server, redis_url: str) -> None:
    store = RedisCounterStore(redis_url, timeout=0.05)
    await store.check([Limit("rl:x", 5, MINUTE)], [])
    redis_server.stop()
    try:
        for call in (
            lambda: store.check([Limit("rl:x", 5, MINUTE)], []),
            lambda: store.record_failure(Failure("f", "b", 3, MINUTE)),
            store.ping,
        ):
            started = time.monotonic()
            with pytest.raises(StoreError):
                await call()
            assert time.monotonic() - started < NEVER_HANGS
    finally:
        redis_server.start()
    await store.close()


async def test_store_reconnects_after_restart(redis_server, redis_url: str) -> None:
    store = RedisCounterStore(redis_url, timeout=1.0)
    lim = Limit("rl:x", 5, MINUTE)
    await store.check([lim], [])
    redis_server.restart()  # drops every connection and the script cache
    assert (await store.check([lim], [])).limits[0].remaining == 4  # no persistence: fresh
    await store.close()


async def test_kept_connection_closed_by_the_server_is_replaced_without_double_charge(
    store: RedisCounterStore, redis_server
) -> None:
    lim = Limit("rl:kept", 5, MINUTE)
    assert (await store.check([lim], [])).limits[0].remaining == 4
    with redis_server.client() as client:  # the store kept its connection: close it
        assert client.client_kill_filter(_type="normal", skipme=True) >= 1
    assert (await store.check([lim], [])).limits[0].remaining == 3  # answered, charged once
    assert (await store.check([lim], [])).limits[0].remaining == 2


async def test_key_prefix_applies_to_every_key(redis_url: str, redis_server) -> None:
    mine = RedisCounterStore(redis_url, key_prefix="app1:", timeout=1.0)
    other = RedisCounterStore(redis_url, key_prefix="app2:", timeout=1.0)
    for s in (mine, other):
        await s.check([Limit("rl:x", 5, MINUTE)], [BanCheck("f:x", "b:x")])
        await s.record_failure(Failure("f:x", "b:x", 1, MINUTE, "o:x", MINUTE))
    with redis_server.client() as client:
        assert {k[:5] for k in client.keys("*")} == {b"app1:", b"app2:"}
    assert await mine.delete_matching("*") == 4  # rl, fail, ban, offence
    assert (await other.check([Limit("rl:x", 5, MINUTE)], [])).limits[0].remaining == 3
    await mine.close()
    await other.close()


async def test_cluster_check_spans_slots_in_one_round_trip(redis_cluster) -> None:
    redis_cluster.flush()
    store = RedisCounterStore(redis_cluster.url, timeout=1.0)
    limits = [Limit(f"rl:{{{who}}}", 3, MINUTE) for who in ("a", "b", "c", "d", "e")]
    await store.check(limits, [BanCheck("f:{z}", "b:{z}")])
    store.round_trips = 0
    result = await store.check(limits, [BanCheck("f:{z}", "b:{z}")])
    assert [s.remaining for s in result.limits] == [1] * 5
    assert store.round_trips == 1
    owners = {node.port for node in redis_cluster.nodes for _ in node.client().keys("rl:*")}
    assert len(owners) > 1  # the keys really live on several masters
    await store.close()


async def test_cluster_limits_alone_span_slots_in_one_round_trip(redis_cluster) -> None:
    redis_cluster.flush()
    store = RedisCounterStore(redis_cluster.url, timeout=1.0)
    limits = [Limit(f"rl:{{{who}}}", 3, MINUTE) for who in ("a", "b", "c", "d", "e")]
    await store.check(limits, [])
    store.round_trips = 0
    result = await store.check(limits, [])
    assert result.allowed
    assert [s.remaining for s in result.limits] == [1] * 5
    assert store.round_trips == 1
    await store.close()


def test_slot_of_is_the_clusters_keyslot(redis_cluster) -> None:
    keys = ["rl:{i:10.0.0.1}", "rl:{u:alice}x", "plain", "a{}b", "{}{x}", "x{y", "é{ü}"]
    with redis_cluster.nodes[0].client() as probe:
        for key in keys:
            expected = probe.cluster("keyslot", key)
            assert redis_py.slot_of(key) == expected, key
            assert redis_py.slot_of(key.encode()) == expected, key


async def test_a_cancelled_many_cancels_the_commands_it_queued(redis_url: str) -> None:
    store = RedisCounterStore(redis_url, timeout=1.0)
    link = store._link
    await link.call(("PING",))  # connected
    waiter = asyncio.create_task(link.many([(("PING",), 0), (("PING",), 0)]))
    await asyncio.sleep(0)  # the task queued both commands and waits for the first
    queued = [future for _, future in link._queue]
    assert len(queued) == 2
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert all(future.cancelled() for future in queued)
    assert await link.many([(("PING",), 0), (("PING",), 0)]) == [b"PONG", b"PONG"]
    await store.close()


async def test_cluster_rejects_ban_keys_in_different_slots(redis_cluster) -> None:
    store = RedisCounterStore(redis_cluster.url, timeout=1.0)
    with pytest.raises(ValueError, match="hash tag"):
        await store.check([], [BanCheck("fail:1.2.3.4", "ban:1.2.3.4")])
    with pytest.raises(ValueError, match="hash tag"):
        await store.record_failure(Failure("fail:1.2.3.4", "ban:1.2.3.4", 3, MINUTE))
    await store.close()


def _client_errors() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(rx, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == rx.__name__
    ]


def _instance(cls: type[BaseException]) -> BaseException:
    for args in (("boom",), ("1 127.0.0.1:7000",), ()):
        try:
            return cls(*args)
        except Exception:  # try the next constructor shape
            continue
    raise AssertionError(f"cannot build {cls}")


@pytest.mark.parametrize("cls", _client_errors(), ids=lambda c: c.__name__)
def test_every_client_error_is_mapped(cls: type[BaseException]) -> None:
    expected = StoreTimeout if issubclass(cls, rx.TimeoutError) else StoreError
    with pytest.raises(expected) as caught, _ERRORS:
        raise _instance(cls)
    assert isinstance(caught.value.__cause__, cls)


@pytest.mark.parametrize(
    "exc",
    [ConnectionResetError(), OSError("x"), TimeoutError(), asyncio.IncompleteReadError(b"", 3)],
    ids=lambda e: type(e).__name__,
)
def test_socket_errors_are_mapped(exc: BaseException) -> None:
    expected = StoreTimeout if isinstance(exc, TimeoutError) else StoreError
    with pytest.raises(expected), _ERRORS:
        raise exc


def test_bugs_are_not_mapped() -> None:
    with pytest.raises(TypeError), _ERRORS:
        raise TypeError("a bug stays a bug")


async def test_cluster_timeout_raises_and_recovers(redis_cluster) -> None:
    redis_cluster.flush()
    store = RedisCounterStore(redis_cluster.url, timeout=0.1)
    lim = Limit("rl:{a}", 5, MINUTE)
    await store.check([lim], [])
    redis_cluster.pause()
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreTimeout):
                await store.check([lim], [])
            assert time.monotonic() - started < NEVER_HANGS
    finally:
        redis_cluster.resume()
    assert await _fresh_remaining(store, "rl:{b}") == 4
    await store.close()


async def test_unbatched_cluster_store_groups_by_slot(redis_cluster) -> None:
    redis_cluster.flush()
    store = RedisCounterStore(redis_cluster.url, batch=False, timeout=1.0)
    limits = [Limit("rl:{a}", 2, MINUTE), Limit("rl:{b}", 1, MINUTE)]
    assert (await store.check(limits, [BanCheck("f:{c}", "b:{c}")])).allowed
    refused = await store.check(limits, [])
    assert [s.allowed for s in refused.limits] == [True, False]
    assert await store.delete_matching("rl:*") == 2
    await store.close()


async def test_cluster_refund_costs_a_round_trip_on_refusals_only(redis_cluster) -> None:
    redis_cluster.flush()
    store = RedisCounterStore(redis_cluster.url, timeout=1.0)
    ip, user = Limit("rl:{10.0.0.1}", 5, MINUTE), Limit("rl:{u:alice}", 1, MINUTE)
    await store.check([ip], [])  # connects and loads the scripts
    store.round_trips = 0
    assert (await store.check([ip, user], [])).allowed
    assert store.round_trips == 1
    assert not (await store.check([ip, user], [])).allowed
    assert store.round_trips == 3  # the check, then the refund of the ip slot
    with redis_cluster.nodes[0].client() as probe:
        assert probe.cluster("keyslot", "rl:{10.0.0.1}") != probe.cluster("keyslot", "rl:{u:alice}")
    await store.close()


async def _fresh_remaining(store: RedisCounterStore, prefix: str) -> int:
    """``remaining`` of the first answered check, each attempt on a key of its own."""

    async def check(attempt: int) -> int:
        result = await store.check([Limit(f"{prefix}:{attempt}", 5, MINUTE)], [])
        return result.limits[0].remaining

    return await first_answer(check)
