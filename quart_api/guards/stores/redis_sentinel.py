"""Redis under Sentinel: ``redis+sentinel://[user:password@]h1:p1[,h2:p2]/<master>[/<db>]``.

The URL lists the sentinels (as ``limits`` spells it); the user and password in it
authenticate to the Redis servers (the sentinels are asked without them). Everything
else is :class:`RedisCounterStore`: the same scripts, per-tick pipelines and kept
connections; only where a connection opens differs. Each new connection asks the
sentinels which server is the primary now, so after a failover (the primary dies, a
replica is promoted) the first call that finds its kept connection dead drops the
link's idle connections and opens a new one on the promoted replica, where the
scripts are loaded again after its first ``NOSCRIPT``. A primary that was demoted
answers writes with ``READONLY``, which redis-py turns into a connection error: the
same path.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import ConfigurationError, redact
from . import _redis_adapter as redis_py
from ._redis_servers import OneServer, Servers
from .redis import RedisCounterStore, split_url

__all__ = ["SentinelCounterStore"]

_SCHEME = "redis+sentinel"


def _parse(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, str]]:
    """Sentinels, master name, database and credentials of a ``redis+sentinel://`` URL."""
    _, sentinels, path, auth = split_url(url)
    shown = redact(url)
    if not 1 <= len(path) <= 2:
        raise ConfigurationError(
            f"REDIS_URL {shown!r}: name the master after the sentinels, "
            "redis+sentinel://host:port[,host:port...]/<master name>[/<db>]"
        )
    if len(path) == 2 and not path[1].isdigit():
        raise ConfigurationError(
            f"REDIS_URL {shown!r}: the part after the master name is a database "
            f"number, not {path[1]!r}"
        )
    return sentinels, path[0], int(path[1]) if len(path) == 2 else 0, auth


class SentinelCounterStore(RedisCounterStore):
    """:class:`RedisCounterStore` on the primary that the sentinels of the URL name."""

    schemes: ClassVar[tuple[str, ...]] = (_SCHEME,)

    @classmethod
    def check_url(cls, url: str) -> None:
        if url.partition("://")[0].lower() != _SCHEME:
            raise ConfigurationError(f"REDIS_URL {redact(url)!r}: not a {_SCHEME}:// URL")
        _parse(url)

    def _servers(self, url: str) -> Servers:
        sentinels, master, db, auth = _parse(url)
        opened: list[redis_py.Sentinel] = []  # the sentinel clients keep pools of their own

        def make_pool() -> redis_py.Pool:
            sentinel, pool = redis_py.sentinel_pool(
                sentinels,
                master,
                db,
                auth,
                max_connections=self._max_connections,
                connect_timeout=self._connect_timeout,
            )
            opened.append(sentinel)
            return pool

        async def close_sentinels() -> None:
            while opened:
                await redis_py.close_sentinel(opened.pop())

        return OneServer(make_pool, close_extra=close_sentinels)
