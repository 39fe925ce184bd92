"""The testbed's stores, each on a loopback address of its own, announcing its relay's.

The whole of 127.0.0.0/8 answers on ``lo``, so each server below listens on an address
of its own ("its host") and announces another one: the address of a relay in front of
it (`bench.cluster.relay`), which is where clients, replicas, other cluster nodes and
sentinels reach it. The classes only take the addresses; starting relays is the
caller's business (before `start()` when the servers must reach each other).

They extend the loopback servers of `quart_api.testing`: same lifecycle, same ports
policy (a port free on both addresses), plus the announce options. Redis's own
(`HostedRedisServer`, `RedisReplicatedCluster`) live there, since the Cluster failover
tests use them on plain loopback.
"""

from __future__ import annotations

from quart_api.testing import (
    HostedRedisServer,
    MemcachedServer,
    PostgresServer,
    RedisSentinelGroup,
    SentinelServer,
    free_port,
)

__all__ = [
    "HostedMemcachedServer",
    "HostedPostgresServer",
    "HostedSentinelGroup",
    "HostedSentinelServer",
]


class HostedSentinelServer(SentinelServer):
    """A Redis Sentinel on its own address, announcing ``announce_host`` (same port)."""

    def __init__(
        self,
        host: str,
        announce_host: str,
        *,
        master_name: str,
        primary: tuple[str, int],
        quorum: int = 2,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 10_000,
        port: int | None = None,
    ) -> None:
        self.announce_host = announce_host
        super().__init__(
            master_name=master_name,
            primary=primary,
            quorum=quorum,
            down_after_ms=down_after_ms,
            failover_timeout_ms=failover_timeout_ms,
            host=host,
            port=port,
        )

    @property
    def announced(self) -> tuple[str, int]:
        return self.announce_host, self.port

    def _pick_port(self) -> int:
        return free_port(hosts=(self.host, self.announce_host))

    def _config_lines(self) -> list[str]:
        return [
            *super()._config_lines(),
            f"sentinel announce-ip {self.announce_host}",
            f"sentinel announce-port {self.port}",
        ]


class HostedSentinelGroup(RedisSentinelGroup):
    """A primary, its replica(s) and sentinels, each on its own address.

    ``redis_hosts[0]`` starts as the primary; every server announces the matching
    ``*_announce`` address.
    """

    def __init__(
        self,
        redis_hosts: list[str],
        redis_announce: list[str],
        sentinel_hosts: list[str],
        sentinel_announce: list[str],
        *,
        master_name: str = "qa-primary",
        down_after_ms: int = 2000,
        ready_timeout: float = 60.0,
    ) -> None:
        if len(redis_hosts) != len(redis_announce) or len(sentinel_hosts) != len(sentinel_announce):
            raise ValueError("every host needs its announced address")
        self._redis_places = list(zip(redis_hosts, redis_announce, strict=True))
        self._sentinel_places = list(zip(sentinel_hosts, sentinel_announce, strict=True))
        super().__init__(
            replicas=len(redis_hosts) - 1,
            sentinels=len(sentinel_hosts),
            master_name=master_name,
            down_after_ms=down_after_ms,
            ready_timeout=ready_timeout,
        )

    def _make_redis(self, index: int, replica_of: tuple[str, int] | None) -> HostedRedisServer:
        host, shown = self._redis_places[index]
        return HostedRedisServer(host, shown, replica_of=replica_of)

    def _make_sentinel(
        self, index: int, primary: tuple[str, int], quorum: int
    ) -> HostedSentinelServer:
        host, shown = self._sentinel_places[index]
        return HostedSentinelServer(
            host,
            shown,
            master_name=self.master_name,
            primary=primary,
            quorum=quorum,
            down_after_ms=self.down_after_ms,
        )


class HostedMemcachedServer(MemcachedServer):
    """memcached on its own address; clients reach it at ``announce_host`` (same port)."""

    def __init__(self, host: str, announce_host: str | None = None) -> None:
        self.announce_host = announce_host or host
        super().__init__(host=host)

    @property
    def announced(self) -> tuple[str, int]:
        return self.announce_host, self.port

    def _pick_port(self) -> int:
        return free_port(hosts=(self.host, self.announce_host))


class HostedPostgresServer(PostgresServer):
    """PostgreSQL on its own address; clients reach it at ``announce_host`` (same port)."""

    def __init__(self, host: str, announce_host: str | None = None) -> None:
        self.announce_host = announce_host or host
        super().__init__(host=host)

    @property
    def announced(self) -> tuple[str, int]:
        return self.announce_host, self.port

    def announced_url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (asyncpg) of database ``dbname`` at the announced address."""
        return f"postgresql+asyncpg://postgres@{self.announce_host}:{self.port}/{dbname}"

    def _pick_port(self) -> int:
        return free_port(hosts=(self.host, self.announce_host))
