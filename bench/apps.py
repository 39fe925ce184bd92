"""The apps ``make bench`` serves with hypercorn, one process per app factory.

Every measured route answers the same small JSON body (``{"ok": true}``), so the
only difference between two routes is the thing being measured:

- ``bare_app``: Quart and one route, nothing else: the ceiling every ratio divides by;
  and ``/users-body``, the same app answering a body the size of the full stack's.
- ``guards_app``: the same route unguarded in an app with ``Guards`` installed (real
  Redis and memcached), plus ``@rate_limited`` alone and ``@cached`` alone. One process
  for the three is what a user's app looks like; the unguarded route shows what
  installing the extension costs every route it does not guard.
- ``service_app``: the reference service (``create_app()``), whose
  ``GET /api/v1/users`` is the full stack, plus ``/bench/users-uncached``: the same
  query behind the same auth, scope check and rate limit, without ``@cached`` (cached
  routes normalize their query string, so varying it would not force misses for long).
- ``quart_rate_limiter_app``: the peer for rate limiting, quart-rate-limiter with its
  Redis store, limiting per IP and per user like ``@rate_limited`` does (two limits),
  and per IP only (its default key) on a second route.
- ``aiocache_app``: the peer for caching, aiocache's ``@cached`` on memcached (pool
  sized like ours).

Configuration comes from the same environment variables as the service
(``REDIS_URL``, ``MEMCACHED_SERVERS``, read through :class:`Settings`). The peers are
imported lazily so the rest works where the ``bench`` extra is not installed.
``/_bench/stats`` (never measured) reports the guards' Redis store counters, so the
harness can compute round trips per request.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from quart import Quart, Response, current_app, request

from quart_api.guards import Guards, cached, rate_limited
from quart_api.settings import Settings

__all__ = [
    "HUGE_LIMIT",
    "USERS_PAGE_BODY",
    "aiocache_app",
    "bare_app",
    "guards_app",
    "quart_rate_limiter_app",
    "service_app",
]

#: A limit no benchmark reaches in a minute (600,000 requests at 10,000/s): the limit is
#: checked and charged on every request, never hit. Not higher: GCRA charges
#: window/limit per request, in whole microseconds in the guards' Lua script, so past
#: 60,000,000 a minute the charge rounds to 0 and the script would never write its key,
#: which would measure a read-only path no real limit takes.
HUGE_LIMIT = 10_000_000
#: Header the micro-apps read the "current user" from (wrk sends it).
USER_HEADER = "X-Bench-User"
BODY: dict[str, Any] = {"ok": True}


def _settings() -> Settings:
    return Settings.from_env()


#: The guards' Prometheus counters read by ``/_bench/stats``: (name, sample, labels).
_GUARD_SAMPLES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("guard_rate_allowed", "quart_api_rate_limit_requests_total", {"decision": "allowed"}),
    ("guard_cache_hit", "quart_api_cache_requests_total", {"result": "hit"}),
    ("guard_cache_miss", "quart_api_cache_requests_total", {"result": "miss"}),
    ("guard_redis_errors", "quart_api_store_errors_total", {"store": "redis"}),
    ("guard_redis_skipped", "quart_api_store_skipped_total", {"store": "redis"}),
    ("guard_memcached_errors", "quart_api_store_errors_total", {"store": "memcached"}),
    ("guard_memcached_skipped", "quart_api_store_skipped_total", {"store": "memcached"}),
)


def _add_stats_route(app: Quart) -> None:
    """``GET /_bench/stats``: this worker's Redis store counters and guard metrics.

    Store errors and skips (the breaker) show when a guard failed open under load:
    a rate limit that was not checked is faster, and must not pass for a fast check.
    """
    from prometheus_client import REGISTRY

    @app.get("/_bench/stats")
    async def bench_stats() -> dict[str, Any]:
        state = current_app.extensions.get("guards")
        counters = getattr(state, "counters", None)
        stats: dict[str, Any] = {
            "store_calls": getattr(counters, "calls", None),
            "store_round_trips": getattr(counters, "round_trips", None),
        }
        for key, name, labels in _GUARD_SAMPLES:
            stats[key] = REGISTRY.get_sample_value(name, labels) or 0.0
        return stats


def _users_page_body(users: int = 20) -> bytes:
    """A users page shaped like ``GET /api/v1/users``'s first page (about 4.9 KB)."""
    stamp = "2026-11-24T13:34:28.631847+00:00"
    data = [
        {
            "id": f"4b0e0bcf-5b5a-4a76-a84d-{n:012d}",
            "username": f"user{n:05d}",
            "full_name": f"Bench User {n}",
            "created_at": stamp,
            "modified_at": stamp,
            "email": f"user{n:05d}@example.com",
            "is_admin": False,
        }
        for n in range(users)
    ]
    page = {"data": data, "total": 10000, "page": 1, "total_pages": 500}
    return json.dumps({**page, "next_page": 2, "prev_page": None}, separators=(",", ":")).encode()


#: What ``/users-body`` answers: the full stack's body, without anything that made it.
USERS_PAGE_BODY = _users_page_body()


def bare_app() -> Quart:
    """Quart with one JSON route and nothing added: the ceiling.

    ``/users-body`` answers bytes the size of the full stack's users page, so the
    table can tell what that body costs (socket writes, the client) from what the
    guards, the auth and the service cost on top of it.
    """
    app = Quart("bench_bare")

    @app.get("/ok")
    async def ok() -> dict[str, Any]:
        return BODY

    @app.get("/users-body")
    async def users_body() -> Response:
        return Response(USERS_PAGE_BODY, content_type="application/json")

    return app


def guards_app() -> Quart:
    """``Guards`` on real stores: ``/ok`` unguarded, ``/limited`` and ``/cached`` guarded."""
    settings = _settings()
    app = Quart("bench_guards")
    app.config.update(settings.guards_config())
    guards = Guards(app)

    @guards.user_loader
    def user_from_header() -> str | None:
        return request.headers.get(USER_HEADER)

    @app.get("/ok")
    async def ok() -> dict[str, Any]:
        return BODY

    @app.get("/limited")
    @rate_limited(limit=HUGE_LIMIT, minutes=1)
    async def limited() -> dict[str, Any]:
        return BODY

    @app.get("/cached")
    @cached(minutes=5)
    async def cached_ok() -> dict[str, Any]:
        return BODY

    _add_stats_route(app)
    return app


def service_app() -> Quart:
    """The reference service, plus the uncached twin of ``GET /api/v1/users``."""
    from quart_api.api.common import api_view
    from quart_api.api.users import users_page
    from quart_api.app import create_app
    from quart_api.auth import requires_scopes

    app = create_app()

    # users.list_users, decorated like it but without @cached.
    @app.get("/bench/users-uncached")
    @rate_limited(config="API_RATE_LIMIT")
    @requires_scopes("users:read")
    @api_view
    async def users_uncached() -> dict[str, Any]:
        return await users_page()

    _add_stats_route(app)
    return app


def quart_rate_limiter_app() -> Quart:
    """quart-rate-limiter on its Redis store: ``/limited`` (ip + user), ``/limited-ip``."""
    from quart_rate_limiter import RateLimiter, rate_limit
    from quart_rate_limiter.redis_store import RedisStore

    settings = _settings()
    if not settings.redis_url:
        raise RuntimeError("quart_rate_limiter_app needs REDIS_URL")
    app = Quart("bench_quart_rate_limiter")
    RateLimiter(app, store=RedisStore(settings.redis_url))

    async def user_key() -> str:
        return request.headers.get(USER_HEADER, "anonymous")

    minute = timedelta(minutes=1)

    @app.get("/limited")
    @rate_limit(HUGE_LIMIT, minute)
    @rate_limit(HUGE_LIMIT, minute, key_function=user_key)
    async def limited() -> dict[str, Any]:
        return BODY

    @app.get("/limited-ip")
    @rate_limit(HUGE_LIMIT, minute)
    async def limited_ip() -> dict[str, Any]:
        return BODY

    return app


def aiocache_app() -> Quart:
    """aiocache's ``@cached`` on memcached (first server of ``MEMCACHED_SERVERS``)."""
    from aiocache import Cache  # type: ignore[import-untyped]
    from aiocache import cached as aiocached

    settings = _settings()
    if not settings.memcached_servers:
        raise RuntimeError("aiocache_app needs MEMCACHED_SERVERS")
    host, _, port = settings.memcached_servers.split(",")[0].strip().rpartition(":")
    app = Quart("bench_aiocache")

    @app.get("/cached")
    @aiocached(  # type: ignore[untyped-decorator]
        ttl=300,
        key="bench:aiocache:cached",
        cache=Cache.MEMCACHED,
        endpoint=host,
        port=int(port),
        pool_size=8,  # the guards' memcached store keeps 8 connections per server too
    )
    async def cached_ok() -> dict[str, Any]:
        return BODY

    return app
