"""Growth: cost per request and Redis memory with 100, 10k and 1M distinct clients.

Clients are told apart by ``X-Forwarded-For`` (``TRUSTED_PROXY_COUNT=1``): wrk names
one of N clients at random per request (``10.a.b.c``). Reaching a million clients
through the app would take longer than the run, so their keys are seeded: one real
request shows the key the guards write for a client (found with ``SCAN``, so the
key format is the guards' own, whatever it is), and the other clients get the same
key with their address, holding a state GCRA can have (an hour of debt on a
10,000-a-day limit, expiring in an hour). Memory is Redis's ``used_memory`` summed
over the primaries, before and after seeding: divided by the clients, the bytes
each tracked client costs (replicas hold as much again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis.crc import key_slot

from bench.cluster.hosts import AppFleet
from bench.cluster.sweep import Load, run_once
from bench.cluster.topology import Testbed
from bench.inprocess import xff_address
from bench.routes import Route
from bench.serve import http_get
from quart_api.testing import HostedRedisServer

__all__ = ["growth", "xff_address"]

ROUTE = Route("growth", "guards", "/growth", what="@rate_limited per client IP, N clients")
PROBE_NETWORK = "203.0.113"
SEED_BATCH = 10_000
DEBT_MS = 3_600_000
MARK = "\x00"


def _primaries(testbed: Testbed) -> list[HostedRedisServer]:
    return testbed.cluster.primaries()


def _key_template(testbed: Testbed, fleet: AppFleet) -> str:
    """The key the guards write for one client of ``/growth``, ``MARK`` for its address.

    Tried for a few seconds, on every host in turn: a request that met a store timeout,
    or came while a worker's breaker skipped the store, failed open and wrote nothing.
    """
    attempts = 40
    for attempt in range(attempts):
        host, port = fleet.addresses[attempt % len(fleet.addresses)]
        address = f"{PROBE_NETWORK}.{attempt + 1}"
        status, body = http_get(
            f"http://{host}:{port}/growth", {"X-Forwarded-For": address}, timeout=10
        )
        if status != 200:
            raise RuntimeError(f"/growth answered {status}: {body[:200]!r}")
        for node in _primaries(testbed):
            with node.client() as client:
                for key in client.scan_iter(match=f"*{address}*", count=1000):
                    return bytes(key).decode().replace(address, MARK)
        time.sleep(0.25)
    raise RuntimeError(
        f"no key for {PROBE_NETWORK}.1-{attempts} in the cluster after a request each: "
        "every request failed open"
    )


def _used_memory(testbed: Testbed) -> tuple[int, int]:
    """(used_memory, keys) summed over the primaries."""
    memory = keys = 0
    for node in _primaries(testbed):
        memory += int(node.info("memory")["used_memory"])
        with node.client() as client:
            keys += int(client.dbsize())
    return memory, keys


def _seed(testbed: Testbed, template: str, start: int, stop: int) -> None:
    """Keys of clients ``start`` .. ``stop - 1``: an hour of debt, expiring in an hour."""
    primaries = _primaries(testbed)
    owner: dict[int, HostedRedisServer] = {}
    with primaries[0].client() as client:
        for first, last, primary, *_replicas in client.execute_command("CLUSTER SLOTS"):
            node = next(n for n in primaries if n.port == int(primary[1]))
            for slot in range(first, last + 1):
                owner[slot] = node
        seconds, micros = client.time()
    tat = str(seconds * 1_000_000 + micros + DEBT_MS * 1000)
    clients = {node.port: node.client() for node in primaries}
    try:
        for begin in range(start, stop, SEED_BATCH):
            pipes: dict[int, Any] = {}
            for index in range(begin, min(stop, begin + SEED_BATCH)):
                key = template.replace(MARK, xff_address(index))
                node = owner[key_slot(key.encode())]  # honours the key's {hash tag}
                pipe = pipes.get(node.port)
                if pipe is None:
                    pipe = pipes[node.port] = clients[node.port].pipeline(transaction=False)
                pipe.set(key, tat, px=DEBT_MS)
            for pipe in pipes.values():
                pipe.execute()
    finally:
        for client in clients.values():
            client.close()


def growth(
    testbed: Testbed,
    fleets: dict[str, AppFleet],
    load: Load,
    *,
    sizes: list[int],
    rounds: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Seed up to each size in turn; at each, bare / growth runs paired, and memory."""
    guards, bare = fleets["guards"], fleets["bare"]
    template = _key_template(testbed, guards)
    base_memory, base_keys = _used_memory(testbed)
    seeded = 0
    steps = []
    bare_route = Route("bare", "bare", "/ok")
    for size in sizes:
        started = time.monotonic()
        _seed(testbed, template, seeded, size)
        seeded = size
        memory, keys = _used_memory(testbed)
        log(
            f"  growth: {size:,} clients seeded in {time.monotonic() - started:.1f} s, "
            f"redis used_memory +{(memory - base_memory) / 1e6:.1f} MB"
        )
        runs = []
        for _ in range(rounds):
            before = run_once(bare_route, bare, testbed, load)
            run = run_once(ROUTE, guards, testbed, load, xff_range=size)
            after = run_once(bare_route, bare, testbed, load)
            run["bare_rps_around"] = round((before["rps"] + after["rps"]) / 2, 1)
            runs.append(run)
        steps.append(
            {
                "clients": size,
                "redis_used_memory": memory,
                "redis_keys": keys,
                "bytes_per_client": round((memory - base_memory) / size, 1),
                "runs": runs,
            }
        )
    return {
        "route": ROUTE.path,
        "key_example": template.replace(MARK, xff_address(0)),
        "baseline_used_memory": base_memory,
        "baseline_keys": base_keys,
        "steps": steps,
    }
