"""The testbed's stores, each on a loopback address of its own, announcing its relay's.

The whole of 127.0.0.0/8 answers on ``lo``, so each server below listens on an address
of its own ("its host") and announces another one: the address of a relay in front of
it (`bench.cluster.relay`), which is where clients, replicas, other cluster nodes and
sentinels reach it. The classes only take the addresses; starting relays is the
caller's business (before `start()` when the servers must reach each other).

They extend the loopback servers of `quart_api.testing`: same lifecycle, same ports
policy (a port free on both addresses), plus the announce options.
"""

from __future__ import annotations

import time
from typing import ClassVar, Self

import redis

from quart_api.testing import (
    CLUSTER_BUS_OFFSET,
    MemcachedServer,
    PostgresServer,
    RedisSentinelGroup,
    RedisServer,
    SentinelServer,
    ServerError,
    free_port,
)

__all__ = [
    "HostedMemcachedServer",
    "HostedPostgresServer",
    "HostedRedisServer",
    "HostedSentinelGroup",
    "HostedSentinelServer",
    "RedisReplicatedCluster",
]


class HostedRedisServer(RedisServer):
    """redis-server on its own address, announcing ``announce_host`` (same port).

    ``cluster=True``: a cluster node whose `CLUSTER SLOTS`, `MOVED` and gossip name
    ``announce_host`` (bus port too), with partial coverage allowed (a failed
    primary's slots stop answering, not the whole cluster) and ``node_timeout_ms``.
    ``replica_of``: the announced address of the primary to replicate. A replica also
    announces ``announce_host`` to its primary, so sentinels find it there.
    """

    def __init__(
        self,
        host: str,
        announce_host: str | None = None,
        port: int | None = None,
        *,
        cluster: bool = False,
        replica_of: tuple[str, int] | None = None,
        node_timeout_ms: int = 2000,
    ) -> None:
        self.announce_host = announce_host or host
        self.node_timeout_ms = node_timeout_ms
        super().__init__(port, host=host, cluster=cluster, replica_of=replica_of)

    @property
    def announced(self) -> tuple[str, int]:
        """Where everyone else reaches this server (its relay)."""
        return self.announce_host, self.port

    def _pick_port(self) -> int:
        hosts = (self.host, self.announce_host)
        if self.cluster:
            return free_port(
                hosts=hosts, below=65_536 - CLUSTER_BUS_OFFSET, also_free=CLUSTER_BUS_OFFSET
            )
        return free_port(hosts=hosts)

    def _command(self) -> list[str]:
        command = super()._command()
        if self.cluster:
            at = command.index("--cluster-announce-ip")
            del command[at : at + 2]
            at = command.index("--cluster-node-timeout")
            del command[at : at + 2]
            command += [
                "--cluster-announce-ip", self.announce_host,
                "--cluster-announce-port", str(self.port),
                "--cluster-announce-bus-port", str(self.port + CLUSTER_BUS_OFFSET),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-require-full-coverage", "no",
            ]  # fmt: skip
        command += [
            "--replica-announce-ip", self.announce_host,
            "--replica-announce-port", str(self.port),
        ]  # fmt: skip
        return command


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
        if len(redis_hosts) != len(redis_announce) or len(sentinel_hosts) != len(
            sentinel_announce
        ):
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


class RedisReplicatedCluster:
    """A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each.

    Node ``i`` listens on ``hosts[i]`` and announces ``announce[i]`` (where its relay
    listens, same port, bus port included): the relays must run before `start()`,
    since the nodes meet and replicate through them. Built with ADDSLOTS /
    SET-CONFIG-EPOCH / MEET / REPLICATE; `start()` returns once every node reports
    cluster_state:ok and every replica's link to its primary is up.
    """

    SLOTS: ClassVar[int] = 16_384

    def __init__(
        self,
        hosts: list[str],
        announce: list[str],
        *,
        primaries: int = 3,
        node_timeout_ms: int = 2000,
        ready_timeout: float = 60.0,
    ) -> None:
        if len(hosts) != len(announce) or len(hosts) % primaries:
            raise ValueError(f"{len(hosts)} hosts for {primaries} primaries: need a multiple")
        self.primary_count = primaries
        self.nodes = [
            HostedRedisServer(host, shown, cluster=True, node_timeout_ms=node_timeout_ms)
            for host, shown in zip(hosts, announce, strict=True)
        ]
        self.ready_timeout = ready_timeout

    @property
    def url(self) -> str:
        """`redis+cluster://` with every node's announced address."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.announced)

    @property
    def announced(self) -> list[tuple[str, int]]:
        return [node.announced for node in self.nodes]

    def start(self) -> Self:
        for node in self.nodes:
            node.start()
        if self.nodes[0].info("cluster")["cluster_enabled"] and self._slots_assigned() == 0:
            self._create()
        self.wait_ok()
        return self

    def _slots_assigned(self) -> int:
        with self.nodes[0].client() as client:
            return int(client.cluster("info")["cluster_slots_assigned"])

    def _node_id(self, node: HostedRedisServer) -> str:
        with node.client() as client:
            return str(client.execute_command("CLUSTER MYID").decode())

    def _create(self) -> None:
        primaries = self.nodes[: self.primary_count]
        bounds = [i * self.SLOTS // len(primaries) for i in range(len(primaries) + 1)]
        for i, node in enumerate(self.nodes):
            with node.client() as client:
                if i < len(primaries):
                    client.execute_command("CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", *node.announced)
        ids = [self._node_id(node) for node in primaries]
        deadline = time.monotonic() + self.ready_timeout
        for i, node in enumerate(self.nodes[len(primaries) :]):
            primary_id = ids[i % len(primaries)]
            while True:  # a node can replicate only a primary it has heard of
                try:
                    with node.client() as client:
                        client.execute_command("CLUSTER REPLICATE", primary_id)
                    break
                except redis.ResponseError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def states(self) -> list[str]:
        states = []
        for node in self.nodes:
            try:
                with node.client() as client:
                    states.append(client.cluster("info")["cluster_state"])
            except redis.RedisError:
                states.append("down")
        return states

    def roles(self) -> list[str]:
        """Each node's role now ("master", "slave", or "down")."""
        roles = []
        for node in self.nodes:
            try:
                roles.append(str(node.info("replication")["role"]))
            except redis.RedisError:
                roles.append("down")
        return roles

    def _replicas_linked(self) -> bool:
        for node in self.nodes[self.primary_count :]:
            try:
                info = node.info("replication")
            except redis.RedisError:
                return False
            if info.get("role") != "slave" or info.get("master_link_status") != "up":
                return False
        return True

    def wait_ok(self) -> None:
        """Block until every running node reports ok and every replica is linked."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            states = [s for s in self.states() if s != "down"]
            if states and set(states) == {"ok"} and self._replicas_linked():
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"cluster not ok after {self.ready_timeout} s: states {self.states()}, "
                    f"roles {self.roles()}"
                )
            time.sleep(0.05)

    def primaries(self) -> list[HostedRedisServer]:
        """The nodes that are primaries now (a failover changes which)."""
        return [n for n, role in zip(self.nodes, self.roles(), strict=True) if role == "master"]

    def flush(self) -> None:
        for node in self.primaries():
            node.flush()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
