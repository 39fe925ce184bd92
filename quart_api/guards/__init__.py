"""Guards for Quart views: ``rate_limited``, ``protected``, ``cached``.

Usable by any Quart app, with no database and no user model of ours::

    from quart_api.guards import Guards, cached, protected, rate_limited

    guards = Guards(app)        # memory stores unless REDIS_URL / MEMCACHED_SERVERS

    @app.get("/things")
    @rate_limited("50/hour")
    @protected(limit=2, minutes=720)
    @cached(minutes=5)
    async def things(): ...

The decorators only mark the view; ``Guards`` runs the checks in one fixed order,
so the order they are written in never matters. A request goes one way through
the package: ``_extension`` (wraps the views once) -> ``_pipeline`` (limits, bans,
pre-checks, failure counting) -> ``_cache`` -> ``_state`` (one request's facts, the
fail-open store call) -> ``stores``.
"""

from quart_api.guards._decorators import cached, exempt, precheck, protected, rate_limited
from quart_api.guards._extension import Guards
from quart_api.guards._responses import (
    Blocked,
    Blocklisted,
    Breach,
    GuardUnavailable,
    RateLimitExceeded,
)
from quart_api.guards._state import client_address
from quart_api.guards.config import DEFAULTS
from quart_api.guards.errors import ConfigurationError
from quart_api.guards.stores.base import CacheStore, CounterStore, StoreError, StoreTimeout

__all__ = [
    "DEFAULTS",
    "Blocked",
    "Blocklisted",
    "Breach",
    "CacheStore",
    "ConfigurationError",
    "CounterStore",
    "GuardUnavailable",
    "Guards",
    "RateLimitExceeded",
    "StoreError",
    "StoreTimeout",
    "cached",
    "client_address",
    "exempt",
    "precheck",
    "protected",
    "rate_limited",
]
