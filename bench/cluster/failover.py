"""Kill a Redis primary under load: 5xx, time until limits hold again, admitted over the limit.

The fault is a primary's host dying: every connection through its relay is reset
(what was in flight, replies and the replication stream alike, is lost) and the
process is SIGKILLed. The Cluster promotes the primary's replica once the other
nodes agree it failed (``cluster-node-timeout``); the sentinels do the same for the
Sentinel group (``down-after-milliseconds``, then an election).

Two kinds of clients run throughout, each on one host, each its own address:

- writers, on ``/failover`` (5 a second) at twice their limit: they charge it all the
  time, so writes are in flight when the primary dies. GCRA admits at most
  ``limit + elapsed / interval`` in any stretch of time, so per writer, admitted
  beyond ``5 + 5 x seconds + 1`` were over the limit;
- probes, on ``/probe`` (1 a day) every 50 ms: after their first request every 200
  is over the limit.

Half of each kind have keys on the primary that dies. A 200 without a ``RateLimit``
header is a request the guards let through unchecked (the store failed, the guards
failed open); a checked 200 beyond a writer's allowance is a charge the promoted
replica never saw (a lost write: what Jepsen measured for Sentinel), because a charge
that was recorded can only refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis
from redis.crc import key_slot

from bench.cluster.apps import FAILOVER_RATE
from bench.cluster.hosts import AppFleet
from bench.cluster.load import Client, Sample, drive
from bench.cluster.topology import Testbed
from quart_api.testing import HostedRedisServer

__all__ = ["failover"]

PROBE_PACE_S = 0.05
#: Twice the writers' limit: every other request is refused, every one is a charge attempt.
WRITER_PACE_S = FAILOVER_RATE[1] / FAILOVER_RATE[0] / 2
BUCKET_S = 0.25


def _identities(count: int, on_victim: Callable[[str], bool], prefix: str) -> list[str]:
    """``count`` client addresses, half with keys on the victim and half elsewhere."""
    inside: list[str] = []
    outside: list[str] = []
    for n in range(1, 65_536):
        ip = f"{prefix}.{n // 256}.{n % 256}"
        (inside if on_victim(ip) else outside).append(ip)
        if len(inside) >= count - count // 2 and len(outside) >= count // 2:
            break
    return inside[: count - count // 2] + outside[: count // 2]


def _victim_slots(node: HostedRedisServer) -> set[int]:
    with node.client() as client:
        slots: set[int] = set()
        for start, end, primary, *_replicas in client.execute_command("CLUSTER SLOTS"):
            if int(primary[1]) == node.port:
                slots.update(range(start, end + 1))
        return slots


def _promoted(testbed: Testbed, kind: str, victim: HostedRedisServer) -> bool:
    """Has a replica taken over from ``victim``?"""
    try:
        if kind == "sentinel":
            state = testbed.sentinel.sentinels[0].master()
            return (state["ip"], int(state["port"])) != victim.announced
        replicas = [n for n in testbed.cluster.nodes if n is not victim and n.running]
        masters = 0
        for node in replicas:
            info = node.info("replication")
            if info.get("role") == "master":
                masters += 1
        return masters > testbed.cluster.primary_count - 1
    except (redis.RedisError, KeyError, OSError):
        return False


def failover(
    kind: str,
    testbed: Testbed,
    fleet: AppFleet,
    *,
    writers: int = 30,
    probes: int = 15,
    before_s: float = 3.0,
    after_s: float = 20.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the scenario on ``kind`` ("cluster" or "sentinel") through ``fleet``."""
    if kind == "cluster":
        victim = testbed.cluster.primaries()[0]
        slots = _victim_slots(victim)
        relay_group, relay_name = "cluster", f"node{testbed.cluster.nodes.index(victim)}"

        def on_victim(ip: str) -> bool:
            return key_slot(ip.encode()) in slots
    else:
        victim = testbed.sentinel.primary()
        relay_group, relay_name = "sentinel", f"redis{testbed.sentinel.redis.index(victim)}"

        def on_victim(ip: str) -> bool:
            return True  # one primary holds every key

    hosts = fleet.addresses
    clients = [
        Client(hosts[i % len(hosts)], ip, "/failover", pace_s=WRITER_PACE_S)
        for i, ip in enumerate(_identities(writers, on_victim, "198.18"))
    ] + [
        Client(hosts[i % len(hosts)], ip, "/probe", pace_s=PROBE_PACE_S)
        for i, ip in enumerate(_identities(probes, on_victim, "198.19"))
    ]
    events: dict[str, float] = {}

    async def fault(started: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(before_s)
        events["kill"] = loop.time() - started
        await loop.run_in_executor(None, testbed.cut_host, relay_group, relay_name)
        await loop.run_in_executor(None, victim.kill)
        log(f"  failover {kind}: killed {victim!r} at {events['kill']:.2f} s")
        while loop.time() - started < before_s + after_s:
            if await loop.run_in_executor(None, _promoted, testbed, kind, victim):
                events["promoted"] = loop.time() - started
                log(f"  failover {kind}: replica promoted at {events['promoted']:.2f} s")
                break
            await asyncio.sleep(0.05)

    samples, _ = drive(clients, max_requests=10_000_000, seconds=before_s + after_s, during=fault)
    return _analyse(kind, samples, clients, writers, events, victim, before_s + after_s)


def _analyse(
    kind: str,
    samples: list[Sample],
    clients: list[Client],
    writers: int,
    events: dict[str, float],
    victim: HostedRedisServer,
    seconds: float,
) -> dict[str, Any]:
    kill = events.get("kill", seconds)
    limit, window = FAILOVER_RATE
    interval = window / limit
    per_client: dict[int, list[Sample]] = {}
    for sample in samples:
        per_client.setdefault(sample.client, []).append(sample)
    over_writers = lost = 0
    over_probes = 0
    for index, own in per_client.items():
        admitted = [s for s in own if s.status == 200]
        if index < writers:
            span = own[-1].t - own[0].t if own else 0.0
            allowed = limit + int(span / interval) + 1
            over_writers += max(0, len(admitted) - allowed)
            lost += max(0, sum(1 for s in admitted if s.checked) - allowed)
        else:
            over_probes += max(0, len(admitted) - 1)
    after = [s for s in samples if s.t >= kill]
    unchecked = [s for s in after if s.status == 200 and not s.checked]
    probe_over_times = [
        s.t
        for index, own in per_client.items()
        if index >= writers
        for s in own[1:]
        if s.status == 200
    ]
    last_unenforced = max([s.t for s in unchecked] + probe_over_times, default=None)
    enforced_after = 0.0 if last_unenforced is None else round(max(0.0, last_unenforced - kill), 3)
    timeline: dict[int, dict[str, int]] = {}
    for s in samples:
        bucket = timeline.setdefault(int(s.t / BUCKET_S), {})
        what = (
            ("200" if s.checked else "200-unchecked")
            if s.status == 200
            else ("error" if s.status == 0 else str(s.status))
        )
        bucket[what] = bucket.get(what, 0) + 1
    return {
        "store": kind,
        "victim": f"{victim.announce_host}:{victim.port}",
        "fault": "primary's host dies: its relay resets every connection, data in flight "
        "is lost, the process is SIGKILLed",
        "writers": writers,
        "probes": len(clients) - writers,
        "requests": len(samples),
        "killed_at_s": round(kill, 3),
        "promoted_after_s": (round(events["promoted"] - kill, 3) if "promoted" in events else None),
        "server_errors_5xx": sum(1 for s in samples if s.status >= 500),
        "connection_errors": sum(1 for s in samples if s.status == 0),
        "unchecked_200_after_kill": len(unchecked),
        "enforced_again_after_s": enforced_after,
        "mostly_enforced_after_s": min(_mostly_enforced(timeline, kill) or 0.0, enforced_after),
        # The last unchecked answer came in the last second of the run: limits were
        # still not (all) enforced when it ended.
        "restored_within_run": last_unenforced is None or last_unenforced < seconds - 1.0,
        "over_limit": over_writers + over_probes,
        "over_limit_writers": over_writers,
        "over_limit_probes": over_probes,
        "lost_charges": lost,
        "statuses": _count(samples),
        "timeline_bucket_s": BUCKET_S,
        "timeline": {f"{k * BUCKET_S:.2f}": v for k, v in sorted(timeline.items())},
    }


def _mostly_enforced(timeline: dict[int, dict[str, int]], kill: float) -> float | None:
    """Seconds from the kill to the bucket after which every bucket is < 5% unchecked."""
    last_bad = None
    for bucket, counts in sorted(timeline.items()):
        start = bucket * BUCKET_S
        if start + BUCKET_S <= kill:
            continue
        total = sum(counts.values())
        if total and counts.get("200-unchecked", 0) / total >= 0.05:
            last_bad = start + BUCKET_S
    return None if last_bad is None else round(max(0.0, last_bad - kill), 3)


def _count(samples: list[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[str(s.status)] = counts.get(str(s.status), 0) + 1
    return dict(sorted(counts.items()))
