"""One backend matrix for the store tests.

``counter_store`` runs a test on memory, a real Redis and a real 3-master Redis
Cluster; ``cache_store`` on memory, one real memcached and two (keys spread by
rendezvous hashing). ``advance(seconds)`` moves the injected clock of the memory
stores and really waits on the servers, so one test body serves every backend;
tests that need real time keep windows short (a few hundred ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from quart import Quart

from quart_api.guards import Guards, rate_limited
from quart_api.guards.stores import (
    CacheStore,
    CounterStore,
    MemcachedCacheStore,
    MemoryCacheStore,
    MemoryCounterStore,
    RedisCounterStore,
    StoreTimeout,
)
from tests.guards.conftest import FakeClock

# Generous: the semantic tests are about results, not speed; fault tests set their own.
TEST_TIMEOUT = 2.0
# Fault tests give the store a 0.05-0.1 s timeout against a stopped or frozen server,
# where an unbounded call would wait forever: finishing within this bound proves the
# timeout fired. It is loose on purpose (a loaded CI machine): not a speed assertion.
NEVER_HANGS = 1.5

_T = TypeVar("_T")


async def first_answer(call: Callable[[int], Awaitable[_T]], attempts: int = 50) -> _T:
    """The result of the first ``call(attempt)`` that is not a ``StoreTimeout``.

    Just after SIGCONT, a server works through what queued while it was stopped,
    and a loaded machine may need longer than a fault test's 0.1 s store timeout.
    A timed-out call closes its connection, and callers give each attempt a key of
    its own where a late reply could otherwise pass for the right one.
    """
    for attempt in range(attempts):
        try:
            return await call(attempt)
        except StoreTimeout:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no answer from the resumed server in {attempts} attempts")


@pytest.fixture
def clock() -> FakeClock:
    """A monotonic-like clock: small values keep microsecond arithmetic exact in floats."""
    return FakeClock(start=1_000.0)


@pytest.fixture(params=["memory", "redis", "cluster"])
async def counter_store(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[CounterStore]:
    store: CounterStore
    if request.param == "memory":
        store = MemoryCounterStore(clock)
    elif request.param == "redis":
        store = RedisCounterStore(request.getfixturevalue("redis_url"), timeout=TEST_TIMEOUT)
    else:
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        store = RedisCounterStore(cluster.url, timeout=TEST_TIMEOUT)
    yield store
    await store.close()


@pytest.fixture(params=["memory", "memcached", "memcached2"])
async def cache_store(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[CacheStore]:
    store: CacheStore
    if request.param == "memory":
        store = MemoryCacheStore(clock)
    else:
        servers = request.getfixturevalue("memcached_servers")
        if request.param == "memcached2":
            second = request.getfixturevalue("memcached_server2")
            second.flush()
            servers = f"{servers},{second.address}"
        store = MemcachedCacheStore(servers, timeout=TEST_TIMEOUT)
    yield store
    await store.close()


@pytest.fixture
def advance(request: pytest.FixtureRequest, clock: FakeClock) -> Callable[[float], Awaitable[None]]:
    """Let ``seconds`` pass: on the fake clock for memory stores, for real on servers."""
    names = [n for n in ("counter_store", "cache_store") if n in request.fixturenames]
    memory = all(request.getfixturevalue(n).kind == "memory" for n in names)

    async def advance(seconds: float) -> None:
        if memory:
            clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    return advance


def limited_app(redis_url: str) -> Quart:
    """An app whose ``/things`` allows 2 a minute, counted in the store of ``redis_url``."""
    app = Quart(__name__)
    Guards(app, redis_url=redis_url, store_timeout=1.0)

    @app.get("/things")
    @rate_limited("2/minute")
    async def things() -> str:
        return "ok"

    return app
