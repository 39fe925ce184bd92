"""The testbed: several hosts on loopback addresses, every store behind a delaying relay.

The whole of 127.0.0.0/8 answers on ``lo``, so each host gets an address of its own.
A store listens on its "inside" address (127.0.1.N) and is reached, by the app hosts
and by the other stores alike, at its public address (127.0.0.N) where its relay
listens on the same port. Redis Cluster nodes announce their public address
(``cluster-announce-ip``, bus port included), replicas and sentinels theirs
(``replica-announce-ip``, ``sentinel announce-ip``), so every ``MOVED``, ``CLUSTER
SLOTS`` and failover answer points at a relay: replication, gossip and sentinel
traffic cross the same "network" as the clients' calls.

=================  =========================  =========================================
what               public (relay) address      notes
=================  =========================  =========================================
app hosts          127.0.0.11 - .13            hypercorn, 2 workers each (no relay)
Redis Cluster      127.0.0.21 - .26            3 primaries (.21-.23) + 3 replicas
Sentinel group     127.0.0.31 - .32            primary + replica, ``qa-primary``
sentinels          127.0.0.41 - .43            quorum 2
memcached          127.0.0.51 - .52            keys spread by rendezvous hashing
PostgreSQL         127.0.0.61
=================  =========================  =========================================

One relay process per store group (cluster, sentinel, memcached, postgres), pinned
with the stores and the load generator to the load cores. :meth:`Testbed.set_rtt`
changes every relay's delay at once: half the RTT each way.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.cluster.relay import RelaySpec
from bench.cluster.relay_process import RelayProcess
from bench.cluster.servers import (
    HostedMemcachedServer,
    HostedPostgresServer,
    HostedSentinelGroup,
)
from quart_api.testing import CLUSTER_BUS_OFFSET, RedisReplicatedCluster

__all__ = ["APP_HOSTS", "Testbed", "inside", "public"]

APP_HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
CLUSTER_NODES = (21, 22, 23, 24, 25, 26)
SENTINEL_REDIS = (31, 32)
SENTINELS = (41, 42, 43)
MEMCACHED = (51, 52)
POSTGRES = 61
MASTER_NAME = "qa-primary"


def public(n: int) -> str:
    """Where clients reach store host ``n``: its relay."""
    return f"127.0.0.{n}"


def inside(n: int) -> str:
    """Where store host ``n``'s server really listens."""
    return f"127.0.1.{n}"


@dataclass
class Testbed:
    """Every store of the testbed and the relays in front of them."""

    failure_detection_ms: int = 2000
    cores: frozenset[int] | None = None
    cluster: RedisReplicatedCluster = field(init=False)
    sentinel: HostedSentinelGroup = field(init=False)
    memcached: list[HostedMemcachedServer] = field(init=False)
    postgres: HostedPostgresServer = field(init=False)
    relays: dict[str, RelayProcess] = field(init=False, default_factory=dict)
    rtt_ms: float = 0.0

    def __post_init__(self) -> None:
        # Ports are picked here, so the relays can be planned before anything starts.
        self.cluster = RedisReplicatedCluster(
            [inside(n) for n in CLUSTER_NODES],
            [public(n) for n in CLUSTER_NODES],
            primaries=3,
            node_timeout_ms=self.failure_detection_ms,
        )
        self.sentinel = HostedSentinelGroup(
            [inside(n) for n in SENTINEL_REDIS],
            [public(n) for n in SENTINEL_REDIS],
            [inside(n) for n in SENTINELS],
            [public(n) for n in SENTINELS],
            master_name=MASTER_NAME,
            down_after_ms=self.failure_detection_ms,
        )
        self.memcached = [HostedMemcachedServer(inside(n), public(n)) for n in MEMCACHED]
        self.postgres = HostedPostgresServer(inside(POSTGRES), public(POSTGRES))

    # -- what the apps are given -----------------------------------------------------

    @property
    def cluster_url(self) -> str:
        return self.cluster.url

    @property
    def sentinel_url(self) -> str:
        return self.sentinel.url

    @property
    def memcached_servers(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in (m.announced for m in self.memcached))

    # -- relays ----------------------------------------------------------------------

    def _relay_plan(self) -> dict[str, list[RelaySpec]]:
        def spec(name: str, server: Any, port: int | None = None) -> RelaySpec:
            port = server.port if port is None else port
            return RelaySpec(name, server.announce_host, port, server.host, port)

        cluster: list[RelaySpec] = []
        for i, node in enumerate(self.cluster.nodes):
            cluster.append(spec(f"node{i}", node))
            cluster.append(spec(f"node{i}/bus", node, node.port + CLUSTER_BUS_OFFSET))
        sentinel = [spec(f"redis{i}", s) for i, s in enumerate(self.sentinel.redis)]
        sentinel += [spec(f"sentinel{i}", s) for i, s in enumerate(self.sentinel.sentinels)]
        return {
            "cluster": cluster,
            "sentinel": sentinel,
            "memcached": [spec(f"memcached{i}", m) for i, m in enumerate(self.memcached)],
            "postgres": [spec("postgres", self.postgres)],
        }

    def start(self) -> Testbed:
        """Relays first (the stores meet and replicate through them), then the stores."""
        for group, specs in self._relay_plan().items():
            self.relays[group] = RelayProcess(group, specs, cores=self.cores).start()
        self.postgres.start()
        for server in self.memcached:
            server.start()
        self.cluster.start()
        self.sentinel.start()
        return self

    def close(self) -> None:
        """Stop everything, stores before relays; never raises (it runs in ``finally``)."""
        for closer in (
            self.sentinel.close,
            self.cluster.close,
            *(m.close for m in self.memcached),
            self.postgres.close,
            *(r.stop for r in self.relays.values()),
        ):
            with contextlib.suppress(Exception):
                closer()

    def set_rtt(self, rtt_ms: float, jitter_ms: float = 0.0) -> None:
        """Every relay delays each direction by half of ``rtt_ms`` (plus or minus jitter)."""
        for relay in self.relays.values():
            relay.set_delay(rtt_ms / 2.0, jitter_ms)
        self.rtt_ms = rtt_ms

    def relay_stats(self) -> dict[str, dict[str, Any]]:
        """Each relay group's counters and CPU seconds so far."""
        return {group: relay.stats() for group, relay in self.relays.items()}

    def ping_rtt_ms(self, samples: int = 30) -> dict[str, float]:
        """Round trips of a ``PING`` to a cluster node through its relay, idle: median, min."""
        host, port = self.cluster.nodes[0].announced
        timings = []
        with redis.Redis(host, port, socket_timeout=5) as client:
            client.ping()
            for _ in range(samples):
                started = time.perf_counter()
                client.ping()
                timings.append((time.perf_counter() - started) * 1000.0)
        return {"median": round(statistics.median(timings), 3), "min": round(min(timings), 3)}

    def cut_host(self, group: str, relay_name: str) -> int:
        """The host behind ``relay_name`` loses its network: connections reset, data lost."""
        return self.relays[group].cut(relay_name)
