"""The seed's reading of ``redis+sentinel://h1:p1,h2:p2/<master name>[/<db>]``.

The guards take that URL as ``REDIS_URL`` themselves (``SentinelCounterStore``); the
seed's stack talks to Sentinel through redis-py, so it needs the parts.
"""

from __future__ import annotations

from quart_api.guards.errors import ConfigurationError

__all__ = ["parse_sentinel_url"]


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
