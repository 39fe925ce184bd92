"""A Redis Cluster with replicas, whose nodes may announce an address other than their own.

`RedisReplicatedCluster` is what a failover test needs: kill or freeze a primary and
the cluster promotes its replica. By default every node is on loopback; the several-
hosts testbed (``bench/cluster``) gives each node an address of its own and has it
announce the address of a relay in front of it (`HostedRedisServer`).
"""

from __future__ import annotations

import time
from typing import ClassVar, Self

import redis

from quart_api.testing._process import HOST, ServerError, free_port
from quart_api.testing.redis import CLUSTER_BUS_OFFSET, RedisServer

__all__ = ["HostedRedisServer", "RedisReplicatedCluster"]


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


class RedisReplicatedCluster:
    """A Redis Cluster of ``primaries`` primaries, the other nodes their replicas in turn.

    Node ``i`` listens on ``hosts[i]`` (default: ``2 * primaries`` nodes on loopback, one
    replica each) and announces ``announce[i]`` (default: its own address). With relays
    in front (announced addresses), the relays must run before `start()`, since the
    nodes meet and replicate through them. Built with ADDSLOTS /
    SET-CONFIG-EPOCH / MEET / REPLICATE; `start()` returns once every node reports
    cluster_state:ok and every replica's link to its primary is up.
    """

    SLOTS: ClassVar[int] = 16_384

    def __init__(
        self,
        hosts: list[str] | None = None,
        announce: list[str] | None = None,
        *,
        primaries: int = 3,
        node_timeout_ms: int = 2000,
        ready_timeout: float = 60.0,
    ) -> None:
        hosts = hosts or [HOST] * (2 * primaries)
        announce = announce or hosts
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
