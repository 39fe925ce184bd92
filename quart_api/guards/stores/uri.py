"""Choose a store from a setting: a URL for counters, a server list for the cache.

Unset (``None`` or empty) means the in-process memory store, the embedded default.
Anything else must name a backend we have; otherwise :class:`ConfigurationError`
says which value is wrong (passwords masked), at start-up rather than at the
first request.
"""

from __future__ import annotations

from ..errors import ConfigurationError, redact
from .base import CacheStore, CounterStore
from .memcached import MemcachedCacheStore, parse_servers
from .memory import MemoryCacheStore, MemoryCounterStore
from .redis import SCHEMES, RedisCounterStore

__all__ = ["cache_store_from_servers", "counter_store_from_url"]


def counter_store_from_url(
    url: str | None,
    *,
    timeout: float = 0.05,
    key_prefix: str = "",
    max_connections: int = 64,
    batch: bool = True,
) -> CounterStore:
    """The counter store for ``REDIS_URL``.

    ``None`` or empty: :class:`MemoryCounterStore`. ``redis://``, ``rediss://``,
    ``unix://``, ``redis+cluster://h1:p1,h2:p2``: :class:`RedisCounterStore` (no
    connection is opened here). Any other scheme: :class:`ConfigurationError`.
    """
    if url is None or not url.strip():
        return MemoryCounterStore()
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"REDIS_URL {redact(url)!r} is not a Redis URL: use redis://, rediss://, "
            "unix:// or redis+cluster://host:port,host:port (or leave it unset for memory)"
        )
    return RedisCounterStore(
        url,
        timeout=timeout,
        key_prefix=key_prefix,
        max_connections=max_connections,
        batch=batch,
    )


def cache_store_from_servers(
    servers: str | None,
    *,
    timeout: float = 0.05,
    pool_size: int = 8,
) -> CacheStore:
    """The cache store for ``MEMCACHED_SERVERS``.

    ``None`` or empty: :class:`MemoryCacheStore`. ``"host:port[,host:port...]"``:
    :class:`MemcachedCacheStore` (no connection is opened here). Malformed:
    :class:`ConfigurationError` naming the value.
    """
    if servers is None or not servers.strip():
        return MemoryCacheStore()
    return MemcachedCacheStore(parse_servers(servers), timeout=timeout, pool_size=pool_size)
