"""The apps of ``make cluster-bench`` that ``bench/apps.py`` does not have.

- :func:`cluster_guards_app`: ``bench.apps.guards_app`` (``/ok``, ``/limited``,
  ``/cached``) plus the scenario routes below, on ``REDIS_URL`` (the Redis Cluster).
- :func:`sentinel_guards_app`: ``/ok``, ``/limited`` and the scenario routes on the
  Sentinel group named by ``BENCH_SENTINEL_URL`` (``redis+sentinel://...``; see
  ``sentinel_store.py``): one primary, so the guards' standalone link, where the
  Cluster goes through redis-py's cluster client.

Scenario routes, each limited per client IP only (``TRUSTED_PROXY_COUNT=1``, so the
load generator names the client in ``X-Forwarded-For``):

=============  ==================  ===================================================
route          limit               used by
=============  ==================  ===================================================
``/exact``     1,000 a day         exactness: 200 clients on every host, one identity
``/failover``  5 a second          failover: clients that keep charging their limit
``/probe``     1 a day             failover: exhausted clients, any 200 is over limit
``/growth``    10,000 a day        growth: 100 to 1M distinct clients (pre-seeded)
=============  ==================  ===================================================
"""

from __future__ import annotations

import os
from typing import Any

from quart import Quart, request

from bench.apps import BODY, HUGE_LIMIT, USER_HEADER, guards_app
from bench.cluster.sentinel_store import sentinel_counter_store
from quart_api.guards import Guards, rate_limited
from quart_api.settings import Settings

__all__ = [
    "EXACT_LIMIT",
    "FAILOVER_RATE",
    "GROWTH_LIMIT",
    "add_scenario_routes",
    "cluster_guards_app",
    "sentinel_guards_app",
]

EXACT_LIMIT = 1000  # a day: the bucket refills one request every 86.4 s, so a run
#: sees none: admitted requests must equal the limit exactly.
#: (limit, seconds) of /failover: a client charges one every 200 ms.
FAILOVER_RATE = (5, 1)
#: A day: never reached in a run (a client would need 10,000 requests), charged on
#: every request, and a client's key lives 8.64 s per request it made.
GROWTH_LIMIT = 10_000


def add_scenario_routes(app: Quart) -> None:
    """``/exact``, ``/failover``, ``/probe`` and ``/growth`` (see the module docstring)."""

    @app.get("/exact")
    @rate_limited(limit=EXACT_LIMIT, seconds=86_400, user=False)
    async def exact() -> dict[str, Any]:
        return BODY

    @app.get("/failover")
    @rate_limited(limit=FAILOVER_RATE[0], seconds=FAILOVER_RATE[1], user=False)
    async def failover() -> dict[str, Any]:
        return BODY

    @app.get("/probe")
    @rate_limited(limit=1, seconds=86_400, user=False)
    async def probe() -> dict[str, Any]:
        return BODY

    @app.get("/growth")
    @rate_limited(limit=GROWTH_LIMIT, seconds=86_400, user=False)
    async def growth() -> dict[str, Any]:
        return BODY


def cluster_guards_app() -> Quart:
    """``bench.apps.guards_app`` with the scenario routes."""
    app = guards_app()
    add_scenario_routes(app)
    return app


def sentinel_guards_app() -> Quart:
    """The scenario routes with the counters on the Sentinel group of ``BENCH_SENTINEL_URL``.

    ``REDIS_URL`` cannot name a Sentinel group yet (issue 13), so the URL comes in a
    variable of its own and the store is built here; once it can, this app is
    ``cluster_guards_app`` with ``REDIS_URL=redis+sentinel://...``.
    """
    settings = Settings.from_env()
    app = Quart("bench_sentinel_guards")
    app.config.update(settings.guards_config())
    store = sentinel_counter_store(os.environ["BENCH_SENTINEL_URL"], timeout=settings.store_timeout)
    guards = Guards(app, counter_store=store)

    @guards.user_loader
    def user_from_header() -> str | None:
        return request.headers.get(USER_HEADER)

    @app.get("/ok")
    async def ok() -> dict[str, Any]:
        return BODY

    # bench.apps.guards_app's /limited: the same check on one primary instead of a Cluster.
    @app.get("/limited")
    @rate_limited(limit=HUGE_LIMIT, minutes=1)
    async def limited() -> dict[str, Any]:
        return BODY

    add_scenario_routes(app)
    return app
