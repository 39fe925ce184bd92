"""Choose a store from a setting: a URL for counters, a server list for the cache.

Unset (``None`` or empty) means the in-process memory store, the embedded default.
Anything else must name a backend we have; otherwise :class:`ConfigurationError`
says which value is wrong (passwords masked), at start-up rather than at the
first request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigurationError, redact
from .base import CacheStore, CounterStore
from .memcached import MemcachedCacheStore, parse_servers
from .memory import MemoryCacheStore, MemoryCounterStore
from .redis import SCHEMES, RedisCounterStore, parse_cluster_url

__all__ = [
    "cache_store_from_servers",
    "check_memcached_servers",
    "check_redis_url",
    "counter_store_from_url",
]


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigurationError` naming ``REDIS_URL`` (password hidden) unless
    ``url`` is one the Redis store can use: a known scheme, a host and a numeric port
    in range (a socket path for ``unix://``), a numeric database. Connects to nothing.
    """
    shown = redact(url)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"REDIS_URL {shown!r} is not a Redis URL: use "
            f"{', '.join(s + '://' for s in SCHEMES)} (or leave it unset for memory)"
        )
    if scheme == "redis+cluster":
        parse_cluster_url(url)
        return
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in 0..65535
    except ValueError:
        raise ConfigurationError(f"REDIS_URL {shown!r} has no valid host:port") from None
    if scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"REDIS_URL {shown!r} names no socket path")
        return
    if scheme in ("redis", "rediss"):
        if not parts.hostname or port == 0:
            raise ConfigurationError(f"REDIS_URL {shown!r} has no valid host:port")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ConfigurationError(
                f"REDIS_URL {shown!r}: the path is a database number, not {database!r}"
            )


def check_memcached_servers(servers: str) -> None:
    """Raise :class:`ConfigurationError` naming ``MEMCACHED_SERVERS`` unless ``servers``
    is a ``host:port[,host:port...]`` list (see :func:`parse_servers`). Connects to nothing.
    """
    parse_servers(servers)


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
    check_redis_url(url)
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
