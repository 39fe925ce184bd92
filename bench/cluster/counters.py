"""Counters read around every run, for costs per request and who used the CPU.

- Redis ``INFO commandstats`` summed over the primaries of the Cluster and of the
  Sentinel group (asked directly, not through the relays): commands per request
  (``evalsha`` for the guards, ``get`` ``incr`` ``expire`` for the seed's limiter).
- memcached ``cmd_get`` over every server.
- The relays: client-to-server chunks through each group's data relays (a pipeline
  is written at once, so this counts round trips as the network sees them; for
  Redis, the Cluster's nodes and the Sentinel group's servers, not its sentinels),
  and each relay process's CPU.
- The load cores' busy share (``/proc/stat``): near 1.0 means the load generator, the
  relays and the stores had no CPU to spare, and the run measured them, not the apps.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import redis

from bench.cluster.topology import Testbed

__all__ = ["Snapshot", "cores_busy", "growth", "snapshot"]

Snapshot = dict[str, float]


def _redis(testbed: Testbed) -> Snapshot:
    totals: dict[str, float] = {}
    for node in [*testbed.cluster.nodes, *testbed.sentinel.redis]:
        if not node.running:
            continue
        try:
            with node.client() as client:
                if client.info("replication")["role"] != "master":
                    continue
                commands: dict[str, Any] = client.info("commandstats")
        except redis.RedisError:
            continue
        for name, value in commands.items():
            name = name.removeprefix("cmdstat_")
            if name not in ("info", "ping", "cluster", "config"):
                totals[name] = totals.get(name, 0.0) + float(value["calls"])
    return {
        "redis_commands": sum(totals.values()),
        **{f"redis_cmd_{name}": n for name, n in totals.items()},
    }


def _memcached(testbed: Testbed) -> Snapshot:
    gets = 0.0
    for server in testbed.memcached:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        for line in reply.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[:2] == ["STAT", "cmd_get"]:
                gets += float(parts[2])
    return {"memcached_gets": gets}


def _relays(testbed: Testbed) -> Snapshot:
    values: Snapshot = {"trips_redis": 0.0}
    for group, stats in testbed.relay_stats().items():
        relays = {n: r for n, r in stats["relays"].items() if not n.endswith("/bus")}
        values[f"trips_{group}"] = float(sum(r["up_chunks"] for r in relays.values()))
        values["trips_redis"] += float(
            sum(
                r["up_chunks"]
                for n, r in relays.items()
                if group == "cluster" or (group == "sentinel" and n.startswith("redis"))
            )
        )
        values[f"relay_cpu_{group}"] = float(stats["cpu_s"])
    values["relay_cpu"] = sum(v for k, v in values.items() if k.startswith("relay_cpu_"))
    return values


def snapshot(testbed: Testbed) -> Snapshot:
    """Every counter above, now."""
    return _redis(testbed) | _memcached(testbed) | _relays(testbed)


def growth(before: Snapshot, after: Snapshot) -> Snapshot:
    """How much each counter grew (absent before: from 0)."""
    return {key: after[key] - before.get(key, 0.0) for key in after}


def cores_busy(cores: frozenset[int] | None) -> tuple[float, float]:
    """(busy ticks, all ticks) of ``cores`` (every CPU if None) since boot."""
    busy = total = 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        name = line.split(" ", 1)[0]
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cores is not None and int(name[3:]) not in cores:
            continue
        ticks = [float(v) for v in line.split()[1:]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        busy += sum(ticks) - idle
        total += sum(ticks)
    return busy, total
