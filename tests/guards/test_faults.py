"""Real servers stopped or frozen mid-test: requests still succeed, quickly, and recover.

Each test brings its server back in a ``finally`` (the session's autouse fixture
would too, but a test must not rely on the next one to clean up after it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import REGISTRY
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_api.guards import cached, protected, rate_limited
from quart_api.testing import MemcachedServer, RedisServer
from tests.guards.conftest import Backend, Calls, make_app, serving

TIMEOUT = 0.05
# Scheduling, the test client and one reconnect attempt on a loaded CI machine:
# generous, yet far below what an unbounded call to a frozen server would cost (forever).
MARGIN = 1.0


async def _timed(call: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    started = time.perf_counter()
    status = await call()
    return status, time.perf_counter() - started


def _guard_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("quart_api.guards") and r.levelno >= logging.ERROR
    ]


def _limited_app(redis_url: str, memcached: str, **limit: object) -> tuple[Quart, Calls]:
    app, _ = make_app(Backend("real", redis_url, memcached), store_timeout=TIMEOUT)
    calls = Calls()

    @app.get("/things")
    @rate_limited(limit=2, minutes=1, **limit)  # type: ignore[arg-type]
    @protected(limit=5, minutes=60)
    async def things() -> str:
        calls()
        return "ok"

    return app, calls


async def _until_limited(client: Client, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if (await client.get("/things")).status_code == 429:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
async def test_requests_succeed_while_redis_is_down_and_limits_return_after_restart(
    redis_server: RedisServer,
    redis_url: str,
    memcached_servers: str,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    app, calls = _limited_app(redis_url, memcached_servers)
    async with serving(app) as client:
        assert [(await client.get("/things")).status_code for _ in range(3)] == [200, 200, 429]
        caplog.clear()
        errors_before = _metric("quart_api_store_errors_total", "redis")
        skipped_before = _metric("quart_api_store_skipped_total", "redis")
        try:
            redis_server.stop() if fault == "stopped" else redis_server.pause()
            timed = [await _timed(lambda: _status(client, "/things")) for _ in range(12)]
        finally:
            redis_server.restart() if fault == "stopped" else redis_server.resume()
        back = time.monotonic()
        statuses = [status for status, _ in timed]
        slowest = max(elapsed for _, elapsed in timed)
        assert statuses == [200] * 12, "the guards fail open"
        assert slowest < TIMEOUT + MARGIN, f"a request took {slowest:.3f} s"
        assert calls.count == 2 + 12
        errors = _guard_errors(caplog)
        assert 1 <= len(errors) <= 2, [r.getMessage() for r in errors]  # logged, not flooded
        breaker = app.extensions["guards"].counter_breaker
        assert breaker.is_open, "the breaker skips the dead store"
        # Counted for /metrics: a few real failures, then skipped calls.
        assert 1 <= _metric("quart_api_store_errors_total", "redis") - errors_before <= 3
        assert _metric("quart_api_store_skipped_total", "redis") - skipped_before >= 9
        # Whole again within 2 s of the store's return (the restarted Redis is empty).
        assert await _until_limited(client, back + 2.0)


async def test_fail_closed_answers_503_problem_json_when_redis_is_down(
    redis_server: RedisServer, redis_url: str, memcached_servers: str
) -> None:
    app, calls = _limited_app(redis_url, memcached_servers, fail_closed=True)
    async with serving(app) as client:
        assert (await client.get("/things")).status_code == 200
        try:
            redis_server.stop()
            refused = [await client.get("/things") for _ in range(5)]
        finally:
            redis_server.restart()
    assert [r.status_code for r in refused] == [503] * 5
    assert refused[0].headers["Content-Type"] == "application/problem+json"
    assert "Retry-After" in refused[0].headers
    assert (await refused[0].get_json())["status"] == 503
    assert calls.count == 1


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
async def test_cached_views_answer_while_memcached_is_down_and_hits_return(
    memcached_server: MemcachedServer,
    redis_url: str,
    memcached_servers: str,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    app, _ = make_app(Backend("real", redis_url, memcached_servers), store_timeout=TIMEOUT)
    calls = Calls()

    @app.get("/things")
    @cached(minutes=5)
    async def things() -> str:
        return f"v{calls()}"

    async with serving(app) as client:
        assert [(await client.get("/things")).headers["X-Cache"] for _ in range(2)] == [
            "miss",
            "hit",
        ]
        caplog.clear()
        try:
            memcached_server.stop() if fault == "stopped" else memcached_server.pause()
            timed = [await _timed(lambda: _status(client, "/things")) for _ in range(12)]
        finally:
            memcached_server.restart() if fault == "stopped" else memcached_server.resume()
        back = time.monotonic()
        assert [status for status, _ in timed] == [200] * 12
        slowest = max(elapsed for _, elapsed in timed)
        assert slowest < TIMEOUT + MARGIN, f"a request took {slowest:.3f} s"
        errors = _guard_errors(caplog)
        assert 1 <= len(errors) <= 2, [r.getMessage() for r in errors]
        assert app.extensions["guards"].cache_breaker.is_open
        hit = False
        while not hit and time.monotonic() < back + 2.0:
            hit = (await client.get("/things")).headers.get("X-Cache") == "hit"
            await asyncio.sleep(0.05)
    assert hit, "the cache serves hits again within 2 s of memcached's return"


def _metric(name: str, store: str) -> float:
    return REGISTRY.get_sample_value(name, {"store": store}) or 0.0


async def _status(client: Client, path: str) -> int:
    return (await client.get(path)).status_code


async def _busy_worker(stop: asyncio.Event) -> None:
    """Other requests' CPU work: the loop is held 30 ms at a time, then let go once."""
    while not stop.is_set():
        time.sleep(0.03)  # blocking on purpose: this is what a busy event loop is
        await asyncio.sleep(0)


@pytest.mark.parametrize("rate_backend", ["real", "cluster"], indirect=True)
async def test_a_busy_event_loop_does_not_wave_requests_through_a_limit(
    rate_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis answers at once, but the loop reads late: every request is still checked.

    Three workers' worth of CPU-bound views hold the loop for longer than
    ``STORE_TIMEOUT`` (50 ms) between turns, while waves of requests hit a limit of 3.
    A store call whose reply arrived in time must not be failed open (and must not
    open the breaker): exactly 3 requests pass.
    """
    app, _ = make_app(rate_backend, store_timeout=TIMEOUT)

    @app.get("/things")
    @rate_limited(limit=3, minutes=1)
    async def things() -> str:
        return "ok"

    caplog.set_level(logging.ERROR, "quart_api.guards")
    async with serving(app) as client:
        stop = asyncio.Event()
        busy = [asyncio.ensure_future(_busy_worker(stop)) for _ in range(3)]
        try:
            responses = []
            for _ in range(10):
                responses += await asyncio.gather(*(client.get("/things") for _ in range(5)))
        finally:
            stop.set()
            await asyncio.gather(*busy)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 3, "requests were waved through unchecked"
    assert statuses.count(429) == 47
    assert not app.extensions["guards"].counter_breaker.is_open
    assert _guard_errors(caplog) == []
