"""Guards for Quart views: ``cached``, ``rate_limited``, ``protected``.

Usable by any Quart app, with no database and no user model of ours::

    from quart_api.guards import Guards, cached, protected, rate_limited

    guards = Guards(app)        # memory stores unless REDIS_URL / MEMCACHED_SERVERS

    @app.get("/things")
    @rate_limited(limit=50, minutes=60)
    @protected(limit=2, minutes=720)
    @cached(minutes=5)
    async def things(): ...

The decorators only mark the view; ``Guards`` runs the checks in one fixed
order, so the order they are written in never matters.
"""

from quart_api.guards._context import client_address
from quart_api.guards._extension import DEFAULTS, Guards
from quart_api.guards._marks import cached, precheck, protected, rate_limited
from quart_api.guards._responses import Blocked, GuardUnavailable, RateLimitExceeded
from quart_api.guards.errors import ConfigurationError
from quart_api.guards.stores.base import CacheStore, CounterStore, StoreError, StoreTimeout

__all__ = [
    "DEFAULTS",
    "Blocked",
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
    "precheck",
    "protected",
    "rate_limited",
]
