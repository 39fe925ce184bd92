"""Stores behind the guards: one small interface per need, three backends.

==========================  ===============================  ==========================
interface                   backends                         capability
==========================  ===============================  ==========================
:class:`CounterStore`       memory, Redis (+ Cluster)        atomic multi-limit GCRA
                                                             check, failure bans,
                                                             failure tallies
:class:`CacheStore`         memory, memcached (N servers)    bytes with TTL, add-lock,
                                                             incr
==========================  ===============================  ==========================

:func:`counter_store_from_url` and :func:`cache_store_from_servers` pick one from
a setting. Every backend error surfaces as :class:`StoreError`.
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
from .uri import cache_store_from_servers, counter_store_from_url

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
    "Store",
    "StoreError",
    "StoreTimeout",
    "Tally",
    "cache_store_from_servers",
    "counter_store_from_url",
]
