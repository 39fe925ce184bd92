"""Choose a store from a setting: a URL's scheme for counters, a server list for the cache.

:data:`COUNTER_BACKENDS` is the registry: each backend class names its URL
``schemes`` and knows how to check and open a URL (:class:`CounterStore`'s
``check_url`` and ``from_url``), so a new backend is one module plus one line here.
Unset (``None`` or empty) means the in-process memory store, the embedded default.
Anything else must name a backend we have; otherwise :class:`ConfigurationError`
says which value is wrong (passwords masked), at start-up rather than at the first
request.
"""

from __future__ import annotations

from ..config import MEMCACHED_POOL_SIZE, REDIS_MAX_CONNECTIONS, STORE_TIMEOUT, parse_servers
from ..errors import ConfigurationError, redact
from .base import CacheStore, CounterStore
from .memcached import MemcachedCacheStore
from .memory import MemoryCacheStore, MemoryCounterStore
from .redis import RedisCounterStore
from .redis_sentinel import SentinelCounterStore

__all__ = [
    "COUNTER_BACKENDS",
    "cache_store_from_servers",
    "check_memcached_servers",
    "check_redis_url",
    "counter_backend",
    "counter_store_from_url",
]

#: Counter stores chosen by ``REDIS_URL``'s scheme.
COUNTER_BACKENDS: tuple[type[CounterStore], ...] = (RedisCounterStore, SentinelCounterStore)


def counter_backend(url: str) -> type[CounterStore]:
    """The backend class for ``url``'s scheme; ``ConfigurationError`` naming the URL."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    for backend in COUNTER_BACKENDS:
        if scheme in backend.schemes:
            return backend
    known = ", ".join(f"{s}://" for b in COUNTER_BACKENDS for s in b.schemes)
    raise ConfigurationError(
        f"REDIS_URL {redact(url)!r} is not a Redis URL: use {known} (or leave it unset for memory)"
    )


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigurationError` naming ``REDIS_URL`` (password hidden) unless a
    backend takes ``url`` (a known scheme, valid hosts, ports and database). Connects
    to nothing."""
    url = url.strip()
    counter_backend(url).check_url(url)


def check_memcached_servers(servers: str) -> None:
    """Raise :class:`ConfigurationError` naming ``MEMCACHED_SERVERS`` unless ``servers``
    is a ``host:port[,host:port...]`` list. Connects to nothing."""
    parse_servers(servers, "MEMCACHED_SERVERS")


def counter_store_from_url(
    url: str | None,
    *,
    timeout: float = STORE_TIMEOUT,
    key_prefix: str = "",
    max_connections: int = REDIS_MAX_CONNECTIONS,
    batch: bool = True,
) -> CounterStore:
    """The counter store for ``REDIS_URL`` (no connection is opened here).

    ``None`` or empty: :class:`MemoryCounterStore`. Otherwise the backend whose
    ``schemes`` name the URL's: ``redis://``, ``rediss://``, ``unix://``,
    ``valkey://``, ``valkeys://``, ``redis+cluster://h1:p1,h2:p2``,
    ``redis+sentinel://h1:p1,h2:p2/<master>[/<db>]``. Any other scheme:
    :class:`ConfigurationError`.
    """
    if url is None or not url.strip():
        return MemoryCounterStore()
    url = url.strip()
    backend = counter_backend(url)
    backend.check_url(url)
    return backend.from_url(
        url,
        timeout=timeout,
        key_prefix=key_prefix,
        max_connections=max_connections,
        batch=batch,
    )


def cache_store_from_servers(
    servers: str | None,
    *,
    timeout: float = STORE_TIMEOUT,
    pool_size: int = MEMCACHED_POOL_SIZE,
) -> CacheStore:
    """The cache store for ``MEMCACHED_SERVERS``.

    ``None`` or empty: :class:`MemoryCacheStore`. ``"host:port[,host:port...]"``:
    :class:`MemcachedCacheStore` (no connection is opened here). Malformed:
    :class:`ConfigurationError` naming the value.
    """
    if servers is None or not servers.strip():
        return MemoryCacheStore()
    return MemcachedCacheStore(parse_servers(servers), timeout=timeout, pool_size=pool_size)
