"""A ``RedisCounterStore`` behind Redis Sentinel, for the benchmark only (until issue 13).

``REDIS_URL=redis+sentinel://h1:p1,h2:p2/<master name>[/<db>]`` is coming to the
guards (issue 13); until it does, the Sentinel scenario of ``make cluster-bench``
builds this store and hands it to ``Guards(counter_store=...)``. It is the guards'
own ``RedisCounterStore`` (same Lua, same per-tick batching, same bounds and error
mapping) with one change: its link takes connections from redis-py's
``SentinelConnectionPool``, which asks the sentinels where the primary is whenever
it opens a connection, instead of from a pool on a fixed address. A connection to a
primary that died fails, the link drops its kept connections and the next one
opens wherever the sentinels point.

This reaches into the guards' private ``RedisLink`` (its ``_connection_slots``):
checked on quart-api's link as of this commit and redis-py 8.1. Once
``counter_store_from_url`` takes ``redis+sentinel://``, :func:`sentinel_counter_store`
returns the guards' own store and this class is dead code to delete.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from quart_api.guards.errors import ConfigurationError
from quart_api.guards.stores import CounterStore, RedisCounterStore, counter_store_from_url
from quart_api.guards.stores._redis_link import RedisLink

__all__ = ["SentinelCounterStore", "parse_sentinel_url", "sentinel_counter_store"]


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int]:
    """``redis+sentinel://h1:p1,h2:p2/<master name>[/<db>]`` -> sentinels, name, db."""
    scheme, _, rest = url.partition("://")
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if scheme != "redis+sentinel" or not hosts or not 1 <= len(parts) <= 2:
        raise ConfigurationError(
            f"{url!r} is not redis+sentinel://host:port[,host:port...]/<master name>[/<db>]"
        )
    sentinels = []
    for part in hosts.split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"{url!r}: {part!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    db = int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else 0
    return sentinels, parts[0], db


def sentinel_counter_store(url: str, *, timeout: float) -> CounterStore:
    """The guards' own store for ``url`` where they take it, else :class:`SentinelCounterStore`."""
    try:
        return counter_store_from_url(url, timeout=timeout)
    except ConfigurationError:
        return SentinelCounterStore(url, timeout=timeout)


class _SentinelLink(RedisLink):
    """``RedisLink`` whose pool finds the primary through the sentinels."""

    def __init__(
        self, sentinels: list[tuple[str, int]], master_name: str, db: int, **kwargs: Any
    ) -> None:
        super().__init__("redis://sentinel-managed", None, **kwargs)
        self._sentinel = Sentinel(
            sentinels,
            socket_timeout=None,
            sentinel_kwargs={
                "socket_timeout": self._connect_timeout,
                "socket_connect_timeout": self._connect_timeout,
            },
        )
        self._master_name = master_name
        self._db = db

    def _connection_slots(self) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
            self._pool = SentinelConnectionPool(  # type: ignore[assignment]
                self._master_name,
                self._sentinel,
                max_connections=self._max_connections,
                socket_connect_timeout=self._connect_timeout,
                socket_timeout=None,
                db=self._db,
            )
        return self._slots, self._pool


class SentinelCounterStore(RedisCounterStore):
    """``RedisCounterStore`` on the primary the sentinels of ``url`` name (see module doc)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        max_connections: int = 64,
        batch: bool = True,
        key_prefix: str = "",
        connect_timeout: float = 0.5,
        pool_timeout: float = 5.0,
    ) -> None:
        sentinels, master_name, db = parse_sentinel_url(url)
        super().__init__(
            f"redis://sentinel-managed/{db}",
            timeout=timeout,
            max_connections=max_connections,
            batch=batch,
            key_prefix=key_prefix,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )
        self._link = _SentinelLink(
            sentinels,
            master_name,
            db,
            timeout=timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            max_connections=max_connections,
            batch=batch,
        )
        self._evalsha = self._link.evalsha
