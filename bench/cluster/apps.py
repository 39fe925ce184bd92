"""The apps of ``make cluster-bench`` that ``bench/apps.py`` does not have.

- :func:`cluster_guards_app`: ``bench.apps.guards_app`` (``/ok``, ``/limited``,
  ``/cached``) plus the scenario routes below, on ``REDIS_URL``: the Redis Cluster
  (``redis+cluster://...``) for most fleets, the Sentinel group
  (``redis+sentinel://...``, the guards' own Sentinel store) for the Sentinel fleet.

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

from typing import Any

from quart import Quart

from bench.apps import BODY, guards_app
from quart_api.guards import rate_limited

__all__ = [
    "EXACT_LIMIT",
    "FAILOVER_RATE",
    "GROWTH_LIMIT",
    "add_scenario_routes",
    "cluster_guards_app",
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
