"""Fixtures of the guard tests: one backend matrix, small apps, an injected clock.

Every behaviour test builds its own small Quart app with ``Guards(app, ...)`` and
views defined in the test, and runs it once per backend: the in-process memory
stores and the real Redis + memcached servers (plus a real Redis Cluster and two
memcached servers for the rate-limit tests). The same assertions on every backend
are what proves that the memory stores implement the same semantics.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from quart import Quart, has_request_context, request, websocket
from quart.typing import TestClientProtocol as Client

from quart_api.guards import Guards


@dataclass(frozen=True)
class Backend:
    """Where the guards keep their state in one run of a test."""

    name: str
    redis_url: str | None
    memcached_servers: str | None

    @property
    def real(self) -> bool:
        return self.name != "memory"


def _backend(request: pytest.FixtureRequest, name: str) -> Backend:
    if name == "memory":
        return Backend("memory", None, None)
    memcached = request.getfixturevalue("memcached_servers")
    if name == "real":
        return Backend("real", request.getfixturevalue("redis_url"), memcached)
    cluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    second = request.getfixturevalue("memcached_server2")
    second.flush()
    return Backend("cluster", cluster.url, f"{memcached},{second.address}")


@pytest.fixture(params=["memory", "real"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Memory stores, then real Redis + memcached (each flushed for the test)."""
    return _backend(request, request.param)


@pytest.fixture(params=["memory", "real", "cluster"])
def rate_backend(request: pytest.FixtureRequest) -> Backend:
    """As ``backend``, plus a real 3-master Redis Cluster and two memcached servers."""
    return _backend(request, request.param)


@pytest.fixture(params=["below", "above"])
def placement(request: pytest.FixtureRequest) -> str:
    """Guards written below ``@app.route`` (the usual way) or above it."""
    return str(request.param)


class FakeClock:
    """Wall-clock seconds that only move when a test says so (``Guards(clock=...)``)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_app(
    backend: Backend, config: dict[str, Any] | None = None, **options: Any
) -> tuple[Quart, Guards]:
    """A fresh app with guards on ``backend``; the current user comes from ``X-User``.

    ``config``: ``app.config`` keys set before the guards read them.
    """
    app = Quart(__name__)
    app.config.update(config or {})
    guards = Guards(
        app,
        redis_url=backend.redis_url,
        memcached_servers=backend.memcached_servers,
        **options,
    )

    @guards.user_loader
    def current_user() -> str | None:
        conn = request if has_request_context() else websocket
        return conn.headers.get("X-User")

    return app, guards


def route(
    app: Quart,
    rule: str,
    view: Callable[..., Any],
    decorators: Sequence[Callable[[Any], Any]],
    placement: str = "below",
    **route_options: Any,
) -> Callable[..., Any]:
    """Register ``view`` with guard ``decorators`` written below or above ``@app.route``.

    ``decorators`` are listed top to bottom as they would be written. "above" applies
    them after ``app.route`` registered the function: the registered object is the
    same one they then mark, exactly as when they are written above the route line.
    """
    if placement == "below":
        for decorate in reversed(decorators):
            view = decorate(view)
        app.route(rule, **route_options)(view)
    else:
        app.route(rule, **route_options)(view)
        for decorate in reversed(decorators):
            view = decorate(view)
    return view


@contextlib.asynccontextmanager
async def serving(app: Quart) -> AsyncIterator[Client]:
    """A test client of ``app`` with its start-up and shut-down hooks run."""
    async with app.test_app() as test_app:
        yield test_app.test_client()


def peer(address: str) -> dict[str, Any]:
    """Request options that make the request come from socket peer ``address``."""
    return {"scope_base": {"client": (address, 40000)}}


class Calls:
    """Counts how often a view ran."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        return self.count
