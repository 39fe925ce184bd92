"""Stores behind the guards: one small interface per need, and the backends.

==========================  ====================================  =====================
interface                   backends                              capability
==========================  ====================================  =====================
:class:`CounterStore`       memory, Redis (+ Valkey, Cluster,     atomic multi-limit
                            Sentinel)                             GCRA check, failure
                                                                  bans and attempt
                                                                  reservations, tallies
:class:`CacheStore`         memory, memcached (N servers)         bytes with TTL,
                                                                  add-lock, incr
==========================  ====================================  =====================

:func:`counter_store_from_url` picks a counter store by the URL's scheme from the
registry (``registry.COUNTER_BACKENDS``: a backend class per module, naming its
schemes); :func:`cache_store_from_servers` the cache from a server list. Every
backend error surfaces as :class:`StoreError`.
"""

from .base import (
    BanCheck,
    BanState,
    CacheStore,
    CheckResult,
    CounterStore,
    Failure,
    Limit,
    LimitState,
    Release,
    Store,
    StoreError,
    StoreTimeout,
    Tally,
)
from .memcached import MemcachedCacheStore
from .memory import MemoryCacheStore, MemoryCounterStore
from .redis import RedisCounterStore
from .redis_sentinel import SentinelCounterStore
from .registry import (
    cache_store_from_servers,
    check_memcached_servers,
    check_redis_url,
    counter_store_from_url,
)

__all__ = [
    "BanCheck",
    "BanState",
    "CacheStore",
    "CheckResult",
    "CounterStore",
    "Failure",
    "Limit",
    "LimitState",
    "MemcachedCacheStore",
    "MemoryCacheStore",
    "MemoryCounterStore",
    "RedisCounterStore",
    "Release",
    "SentinelCounterStore",
    "Store",
    "StoreError",
    "StoreTimeout",
    "Tally",
    "cache_store_from_servers",
    "check_memcached_servers",
    "check_redis_url",
    "counter_store_from_url",
]
