"""Throughput at each store RTT, and exactness across hosts, on the Redis Cluster.

At each RTT every route is measured round by round (in an order rotated each round),
each run between two runs of bare, as ``make bench`` does (``bench/run.py`` says why):
requests/s, p50 and p99 are medians over the rounds, and the ratio to bare comes
both as a ratio of medians and paired with the bare runs around each run. Around
every run the store counters, the relays' CPU, the apps' CPU and the load cores'
busy share are read (``counters.py``).

Exactness: 200 clients, spread over every host, all claiming one client address,
against ``/exact`` (1,000 a day): the requests admitted must not exceed the limit.
Those admitted with a ``RateLimit`` header were counted by the store; those without
were let through unchecked (a store call failed or timed out and the guards failed
open), so the two numbers tell a counting error from a fail-open.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.apps import USER_HEADER
from bench.cluster.apps import EXACT_LIMIT
from bench.cluster.counters import cores_busy, growth, snapshot
from bench.cluster.hosts import AppFleet
from bench.cluster.load import Client, drive, run_wrk_hosts
from bench.cluster.topology import Testbed
from bench.profile import find_py_spy, start_recording
from bench.profile import summarize as summarize_profile
from bench.routes import ROUTES, Route
from bench.stats import foreign_cores, foreign_cpu_ticks

__all__ = ["PROFILE_RTT", "SWEEP_ROUTES", "Load", "exactness", "measure_rtt", "profile_route"]

_BY_NAME = {route.name: route for route in ROUTES}
#: What is measured at each RTT: bench/routes.py's own routes, the same rate limit on
#: the Sentinel group (one primary: the guards' standalone link), and the seed's stack.
SWEEP_ROUTES: tuple[Route, ...] = (
    _BY_NAME["bare"],
    _BY_NAME["rate_limited"],
    _BY_NAME["cached"],
    _BY_NAME["full-stack"],
    Route(
        "rate_limited-sentinel",
        "sentinel",
        "/limited",
        user=True,
        what="@rate_limited ip + user on the Sentinel group's primary (standalone link)",
    ),
    Route(
        "seed",
        "seed",
        "/seed/users",
        what="the seed's stack: Flask + gunicorn sync workers, GET/INCR/EXPIRE + memcached get",
    ),
)
SETTLE_SECONDS = 0.3
#: The RTT at which ``--profile`` samples (the one the targets are set at).
PROFILE_RTT = 1.0


@dataclass(frozen=True, slots=True)
class Load:
    """How each run loads the hosts."""

    wrk: str
    duration: int
    connections: int
    token: str
    load_cores: frozenset[int] | None


def _headers(route: Route, token: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    if route.bearer:
        headers["Authorization"] = f"Bearer {token}"
    if route.user:
        headers[USER_HEADER] = "bench-user"
    return headers


def run_once(
    route: Route,
    fleet: AppFleet,
    testbed: Testbed,
    load: Load,
    *,
    duration: int | None = None,
    xff_range: int = 0,
    path: str | None = None,
) -> dict[str, Any]:
    """One wrk run over every host, with the counters and CPU read around it."""
    before = snapshot(testbed)
    app_cpu = fleet.cpu_seconds()
    sleeps = fleet.sleeps()
    busy_before = cores_busy(load.load_cores)
    foreign_before = foreign_cpu_ticks()
    result, unchecked = run_wrk_hosts(
        load.wrk,
        fleet.addresses,
        path or route.path,
        duration=duration or load.duration,
        connections=load.connections,
        headers=_headers(route, load.token),
        xff_range=xff_range,
    )
    busy_after = cores_busy(load.load_cores)
    foreign = foreign_cores(foreign_before, foreign_cpu_ticks(), result.duration_s)
    time.sleep(SETTLE_SECONDS)  # requests wrk left in flight finish and count here
    app_cpu = fleet.cpu_seconds() - app_cpu
    sleeps = fleet.sleeps() - sleeps
    grew = growth(before, snapshot(testbed))
    n = max(result.requests, 1)
    seconds = max(result.duration_s, 1e-9)
    ticks = busy_after[1] - busy_before[1]
    return {
        **result.as_dict(),
        "unchecked_200": unchecked,
        "app_cpu_us_per_request": round(app_cpu / n * 1e6, 1),
        "app_cpu_cores": round(app_cpu / seconds, 3),
        "app_sleeps_per_request": round(sleeps / n, 3),
        "relay_cpu_cores": round(grew.get("relay_cpu", 0.0) / seconds, 3),
        "load_cores_busy": round((busy_after[0] - busy_before[0]) / ticks, 3) if ticks else None,
        "foreign_cpu_cores": foreign,
        "per_request": {
            "redis_round_trips": round(grew.get("trips_redis", 0.0) / n, 3),
            "redis_commands": round(grew.get("redis_commands", 0.0) / n, 3),
            **{
                key.removeprefix("redis_cmd_"): round(value / n, 3)
                for key, value in grew.items()
                if key.startswith("redis_cmd_") and value > 0
            },
            "memcached_round_trips": round(grew.get("trips_memcached", 0.0) / n, 3),
            "memcached_gets": round(grew.get("memcached_gets", 0.0) / n, 3),
            "postgres_round_trips": round(grew.get("trips_postgres", 0.0) / n, 3),
        },
    }


def measure_rtt(
    fleets: dict[str, AppFleet],
    testbed: Testbed,
    load: Load,
    *,
    rounds: int,
    warmup: int,
    deadline: float,
    log: Callable[[str], None],
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every route of ``SWEEP_ROUTES`` served by ``fleets``, at the testbed's current RTT.

    (See the module docstring.)
    """
    routes = [route for route in SWEEP_ROUTES if route.app in fleets]
    bare, *others = routes
    runs: dict[str, list[dict[str, Any]]] = {route.name: [] for route in routes}
    notes: list[str] = []
    if warmup:
        for route in routes:
            run_once(route, fleets[route.app], testbed, load, duration=warmup)
    for index in range(rounds):
        shift = index % len(others)
        before: dict[str, Any] | None = None
        for route in others[shift:] + others[:shift]:
            if time.monotonic() + 3 * load.duration + 10 > deadline:
                notes.append(f"RTT {testbed.rtt_ms} ms: stopped in round {index + 1}, time is up")
                return runs, notes
            if before is None:
                before = run_once(bare, fleets[bare.app], testbed, load)
                runs[bare.name].append(before)
            run = run_once(route, fleets[route.app], testbed, load)
            after = run_once(bare, fleets[bare.app], testbed, load)
            runs[bare.name].append(after)
            run["bare_rps_around"] = round((before["rps"] + after["rps"]) / 2, 1)
            runs[route.name].append(run)
            log(
                f"  rtt {testbed.rtt_ms:g} ms round {index + 1} {route.name:<21} "
                f"{run['rps']:>8.0f} req/s (bare {run['bare_rps_around']:.0f})  "
                f"p99 {run['latency_ms']['p99']:>7.2f} ms  "
                f"redis trips/req {run['per_request']['redis_round_trips']:.2f}"
            )
            before = after
    return runs, notes


def exactness(
    fleet: AppFleet, *, clients: int, identity: str, seconds: float = 60.0
) -> dict[str, Any]:
    """``clients`` connections over every host, one client address, 3 x the limit asked."""
    hosts = fleet.addresses
    crowd = [Client(hosts[i % len(hosts)], identity, "/exact") for i in range(clients)]
    asked = 3 * EXACT_LIMIT
    samples, _ = drive(crowd, max_requests=asked, seconds=seconds)
    statuses: dict[str, int] = {}
    for sample in samples:
        statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
    admitted = statuses.get("200", 0)
    checked = sum(1 for s in samples if s.status == 200 and s.checked)
    elapsed = max((s.t for s in samples), default=0.0)
    # 1,000 a day refills one request every 86.4 s: a run of a minute or less earns
    # at most one more.
    allowed = EXACT_LIMIT + int(elapsed // (86_400 / EXACT_LIMIT))
    return {
        "clients": clients,
        "hosts": len(hosts),
        "limit": EXACT_LIMIT,
        "allowed": allowed,
        "requests": len(samples),
        "admitted": admitted,
        "over_limit": max(0, admitted - allowed),
        "under_limit": max(0, EXACT_LIMIT - admitted),
        "unchecked_200": admitted - checked,
        # Admitted by the store itself (a RateLimit header came with them): above the
        # limit only if the counting across hosts were wrong, whatever failed open.
        "checked_200": checked,
        "over_limit_checked": max(0, checked - allowed),
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(elapsed, 2),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of one route's runs at one RTT."""

    def median(key: str) -> float | None:
        values = [run[key] for run in runs if run.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    paired = [run["rps"] / run["bare_rps_around"] for run in runs if run.get("bare_rps_around")]
    costs = sorted({key for run in runs for key in run["per_request"]})
    return {
        "rps": median("rps"),
        "p50_ms": statistics.median([r["latency_ms"]["p50"] for r in runs]) if runs else None,
        "p99_ms": statistics.median([r["latency_ms"]["p99"] for r in runs]) if runs else None,
        "paired_ratio_to_bare": round(statistics.median(paired), 3) if paired else None,
        "app_cpu_us_per_request": median("app_cpu_us_per_request"),
        "app_cpu_cores": median("app_cpu_cores"),
        "app_sleeps_per_request": median("app_sleeps_per_request"),
        "relay_cpu_cores": median("relay_cpu_cores"),
        "load_cores_busy": median("load_cores_busy"),
        "foreign_cpu_cores_max": max((r.get("foreign_cpu_cores", 0.0) for r in runs), default=0),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["socket_errors"] + r["non_2xx"] for r in runs),
        "unchecked_200": sum(r["unchecked_200"] for r in runs),
        "per_request": {
            key: round(
                statistics.median([r["per_request"][key] for r in runs if key in r["per_request"]]),
                3,
            )
            for key in costs
        },
    }


def profile_route(
    name: str, fleets: dict[str, AppFleet], testbed: Testbed, load: Load, out: Path
) -> dict[str, Any]:
    """Where ``name``'s server time goes: py-spy on the first host's app while wrk loads all.

    The profiled run is never a measured one (sampling slows the server).
    """
    route = next((r for r in SWEEP_ROUTES if r.name == name), None)
    if route is None or route.app not in fleets:
        return {"error": f"no route {name!r} here"}
    py_spy = find_py_spy()
    member = fleets[route.app].members[0]
    if py_spy is None or member.process is None:
        return {"error": "py-spy not installed (pip install -e '.[bench]')"}
    raw = out / f"cluster-profile-{name}.txt"
    raw.unlink(missing_ok=True)
    recorder = start_recording(py_spy, member.pid, load.duration, raw)
    try:
        run_once(route, fleets[route.app], testbed, load)
        _, err = recorder.communicate(timeout=load.duration + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if not raw.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
    return {"stacks": str(raw), "host": member.host, **summarize_profile(raw)}
