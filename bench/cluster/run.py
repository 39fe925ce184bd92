"""``make cluster-bench``: the guards across several hosts, with network latency and failover.

    python -m bench.cluster [--rtts 0,0.5,1,2] [--rounds 3] [--duration 3] [--smoke]

Starts the testbed (``topology.py``: a Redis Cluster of 3 primaries + 3 replicas, a
Sentinel group, 2 memcached and PostgreSQL, each on its own loopback address behind
a delaying relay), migrates and seeds the database, serves the apps on three host
addresses (hypercorn, 2 workers each; the seed's Flask app on gunicorn), then:

1. at each store RTT: bare, ``rate_limited``, cached hit, full stack and the seed's
   stack, interleaved and paired with bare (``sweep.py``), and exactness across
   hosts (200 clients, one limit);
2. growth: 100 / 10k / 1M distinct clients (``growth.py``);
3. failover: a Cluster primary, then the Sentinel primary, killed under load
   (``failover.py``).

Every app worker runs on the server core(s), everything else (wrk, relays, stores,
this harness) on the load core(s). Results: a table on stdout,
``bench/results/cluster.json`` and ``cluster.png``, app logs in
``bench/results/cluster-logs/``. Everything started is stopped on exit, SIGTERM
included, and the whole run is bounded by ``--max-time``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.apps import HUGE_LIMIT
from bench.cluster.chart import write_chart
from bench.cluster.failover import failover
from bench.cluster.growth import growth
from bench.cluster.hosts import AppFleet, wait_all
from bench.cluster.report import build_report, print_report, write_json
from bench.cluster.sweep import (
    PROFILE_RTT,
    SWEEP_ROUTES,
    Load,
    exactness,
    measure_rtt,
    profile_route,
)
from bench.cluster.topology import APP_HOSTS, Testbed
from bench.harness import Terminated, start_harness
from bench.loadgen import WrkError, wrk_version
from bench.run import _commit
from bench.seed import seed
from bench.serve import ROOT, Cores, ServeError
from quart_api.testing import ServerError, free_port

__all__ = ["main"]

HUGE_RATE = f"{HUGE_LIMIT}/minute"
#: What ``--failover`` takes.
FAILOVER_STORES = ("cluster", "sentinel")
#: ``--smoke``: about two minutes, bounded; options given explicitly still win.
SMOKE: dict[str, Any] = {
    "rtts": "0,1",
    "rounds": 1,
    "duration": 1,
    "warmup": 0,
    "connections": 16,
    "users": 100,
    "growth": "100,1000",
    "growth_rounds": 1,
    "failover": "cluster",
    "failure_detection_ms": 1000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--rtts", default="0,0.5,1,2", help="store RTTs in ms (0,0.5,1,2)")
    parser.add_argument("--jitter", type=float, default=0.0, help="jitter per direction, ms")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per RTT (3)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load per route first")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--workers", type=int, default=2, help="hypercorn workers per host (2)")
    parser.add_argument("--users", type=int, default=10_000, help="users to seed (10000)")
    parser.add_argument(
        "--growth", default="100,10000,1000000", help="distinct clients (100,10000,1000000)"
    )
    parser.add_argument("--growth-rounds", type=int, default=3)
    parser.add_argument(
        "--failover", default="cluster,sentinel", help="stores whose primary is killed"
    )
    parser.add_argument("--failover-rtt", type=float, default=1.0, help="RTT during failover")
    parser.add_argument(
        "--failure-detection-ms",
        type=int,
        default=2000,
        help="cluster-node-timeout and sentinel down-after-milliseconds (2000)",
    )
    parser.add_argument("--exact-clients", type=int, default=200)
    parser.add_argument(
        "--store-timeout",
        default="0.05",
        help="STORE_TIMEOUT of the apps, seconds (0.05, the default of the guards)",
    )
    parser.add_argument(
        "--load-nice",
        type=int,
        default=10,
        help="niceness of the load generators (wrk, the Python clients) once the stores, "
        "relays and apps run: the network and the stores are other machines, and must not "
        "queue behind the load on the shared core (10)",
    )
    parser.add_argument(
        "--profile",
        default="",
        help="routes to sample with py-spy at 1 ms RTT after measuring (e.g. full-stack,seed)",
    )
    parser.add_argument("--max-time", type=float, default=3600.0, help="bound on the run (s)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default=None, help="base name of the JSON/PNG")
    parser.add_argument("--smoke", action="store_true", help="a bounded run of about a minute")
    args = parser.parse_args(argv)
    if args.smoke:  # shorter everything, except what was asked for explicitly
        for name, value in SMOKE.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
        args.max_time = min(args.max_time, 400.0)
    args.name = args.name or ("cluster-smoke" if args.smoke else "cluster")
    try:
        args.rtt_list = [float(v) for v in args.rtts.split(",") if v.strip()]
        args.growth_sizes = [int(v) for v in args.growth.split(",") if v.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    args.failover_list = [v.strip() for v in args.failover.split(",") if v.strip()]
    unknown = set(args.failover_list) - set(FAILOVER_STORES)
    if unknown:
        parser.error(f"--failover takes {FAILOVER_STORES}, not {sorted(unknown)}")
    for name in ("rounds", "duration", "connections", "workers", "users"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def _migrate(database_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise ServerError(f"alembic upgrade head failed:\n{done.stdout}\n{done.stderr}")


def _app_env(testbed: Testbed, database_url: str, store_timeout: str) -> dict[str, str]:
    """Every app's settings: stores through the relays, limits never reached, cheap argon2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PROMETHEUS"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=testbed.cluster_url,
        MEMCACHED_SERVERS=testbed.memcached_servers,
        TRUSTED_PROXY_COUNT="1",
        STORE_TIMEOUT=store_timeout,
        API_RATE_LIMIT=HUGE_RATE,
        LOGIN_RATE_LIMIT=HUGE_RATE,
        PROTECT_LIMIT=f"{HUGE_LIMIT}/hour",
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="8",
        ARGON2_PARALLELISM="1",
        APP_ENV="development",
        SECRET_KEY=secrets.token_urlsafe(48),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        SEED_REDIS_URL=testbed.cluster_url,
        SEED_MEMCACHED_SERVERS=testbed.memcached_servers,
        SEED_RATE_LIMIT=str(HUGE_LIMIT),
    )
    return env


def _fleets(
    args: argparse.Namespace,
    env: dict[str, str],
    sentinel_url: str,
    cores: Cores,
    logs: Path,
    skipped: dict[str, str],
) -> dict[str, AppFleet]:
    server_cores = cores.server
    seed_workers = 2 * (len(server_cores) if server_cores else (os.cpu_count() or 1)) + 1
    plan = [
        ("bare", "bench.apps:bare_app()", "/ok", "hypercorn", args.workers),
        ("guards", "bench.cluster.apps:cluster_guards_app()", "/ok", "hypercorn", args.workers),
        ("service", "bench.apps:service_app()", "/healthz", "hypercorn", args.workers),
        ("seed", "bench.cluster.seed_app:create_app()", "/seed/healthz", "gunicorn", seed_workers),
    ]
    missing = [
        m for m in ("flask", "gunicorn", "pymemcache") if importlib.util.find_spec(m) is None
    ]
    if missing:
        skipped["seed"] = f"{', '.join(missing)} not installed (pip install -e '.[bench]')"
        plan = [entry for entry in plan if entry[0] != "seed"]
    # The Sentinel group's app: the same guards app, REDIS_URL naming the Sentinel group.
    sentinel = "bench.cluster.apps:cluster_guards_app()"
    plan.append(("sentinel", sentinel, "/ok", "hypercorn", args.workers))
    envs = {"sentinel": {**env, "REDIS_URL": sentinel_url}}
    return {
        name: AppFleet.build(
            name,
            target,
            hosts=APP_HOSTS,
            port=free_port(hosts=APP_HOSTS),
            env=envs.get(name, env),
            logs=logs,
            workers=workers,
            cores=server_cores,
            ready_path=ready,
            server=server,
        )
        for name, target, ready, server, workers in plan
    }


def _cores(harness_cores: Cores) -> Cores:
    """Every app worker on the server core(s); wrk, relays and stores on the rest."""
    if harness_cores.server is None or harness_cores.load is None:
        return harness_cores
    return Cores(
        harness_cores.server,
        harness_cores.load,
        f"every app worker on core(s) {sorted(harness_cores.server)}; wrk, relays, stores "
        f"and this harness on {sorted(harness_cores.load)}",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the testbed; 0 when it ran (targets are reported, not enforced), else 1 or 2."""
    args = parse_args(argv)
    started_wall, started = time.time(), time.monotonic()
    deadline = started + args.max_time
    harness = start_harness("cluster-bench", 1)
    if harness is None:
        return 2
    cores = _cores(harness.cores)
    results_dir: Path = args.results_dir
    logs = results_dir / f"{args.name}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()

    def log(line: str) -> None:
        print(line, flush=True)

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_wall)),
        "commit": _commit(),
        "python": platform.python_version(),
        "wrk": wrk_version(harness.wrk),
        "cpus": os.cpu_count(),
        "pinning": cores.as_dict(),
        "app_hosts": list(APP_HOSTS),
        "workers_per_host": args.workers,
        "rtts_ms": args.rtt_list,
        "jitter_ms": args.jitter,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": args.connections,
        "failure_detection_ms": args.failure_detection_ms,
        "load_nice": args.load_nice,
        "store_timeout_s": float(args.store_timeout),
        "smoke": args.smoke,
    }
    sweep: dict[str, Any] = {}
    exact: dict[str, Any] = {}
    grown: dict[str, Any] | None = None
    failovers: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    notes: list[str] = []
    skipped: dict[str, str] = {}
    meta["skipped"] = skipped
    error: str | None = None
    testbed = Testbed(failure_detection_ms=args.failure_detection_ms, cores=cores.load)
    fleets: dict[str, AppFleet] = {}
    log(f"cluster-bench: {cores.note}")
    try:
        testbed.start()
        meta["stores"] = {
            "cluster": testbed.cluster_url,
            "sentinel": testbed.sentinel_url,
            "memcached": testbed.memcached_servers,
            "postgres": "{}:{}".format(*testbed.postgres.announced),
        }
        log(f"cluster-bench: stores up ({time.monotonic() - started:.1f} s)")
        testbed.postgres.create_database("bench")
        database_url = testbed.postgres.announced_url("bench")
        _migrate(database_url)
        seeded = asyncio.run(seed(database_url, args.users))
        env = _app_env(testbed, database_url, args.store_timeout)
        fleets = _fleets(args, env, testbed.sentinel_url, cores, logs, skipped)
        meta["workers"] = {name: fleet.workers() for name, fleet in fleets.items()}
        for fleet in fleets.values():
            fleet.start()
        wait_all(list(fleets.values()), timeout=min(180.0, deadline - time.monotonic()))
        log(
            f"cluster-bench: {len(fleets)} apps on {len(APP_HOSTS)} hosts up "
            f"({time.monotonic() - started:.1f} s)"
        )
        load = Load(harness.wrk, args.duration, args.connections, seeded.token, cores.load)
        for index, rtt in enumerate(args.rtt_list):
            testbed.set_rtt(rtt, args.jitter)
            key = f"{rtt:g}"
            sweep[key] = {"ping_ms": testbed.ping_rtt_ms()}
            runs, more = measure_rtt(
                fleets, testbed, load, rounds=args.rounds, warmup=args.warmup,
                deadline=deadline, log=log,
            )  # fmt: skip
            sweep[key]["runs"] = runs
            notes += more
            exact[key] = exactness(
                fleets["guards"], clients=args.exact_clients, identity=f"192.0.2.{index + 1}"
            )
            log(
                f"  rtt {rtt:g} ms exactness: {exact[key]['admitted']} admitted of "
                f"{exact[key]['requests']} for a limit of {exact[key]['limit']}"
            )
            if rtt == PROFILE_RTT:
                for name in (n.strip() for n in args.profile.split(",") if n.strip()):
                    profiles[name] = profile_route(name, fleets, testbed, load, results_dir)
        if args.growth_sizes and time.monotonic() + 120 < deadline:
            testbed.set_rtt(args.failover_rtt, args.jitter)
            grown = growth(
                testbed, fleets, load, sizes=args.growth_sizes, rounds=args.growth_rounds, log=log
            )
        for kind in args.failover_list:
            if time.monotonic() + 60 > deadline:
                notes.append(f"failover {kind} skipped: --max-time reached")
                continue
            testbed.set_rtt(args.failover_rtt, args.jitter)
            fleet = fleets["guards" if kind == "cluster" else "sentinel"]
            failovers[kind] = failover(
                kind, testbed, fleet, after_s=min(20.0, 8.0 + args.failure_detection_ms / 250),
                before_s=2.0 if args.smoke else 3.0, log=log,
            )  # fmt: skip
    except (Terminated, KeyboardInterrupt) as exc:
        error = f"interrupted: {exc}"
    except (
        ServerError,
        ServeError,
        WrkError,
        OSError,
        RuntimeError,
        subprocess.SubprocessError,
    ) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        for fleet in fleets.values():
            with contextlib.suppress(Exception):
                fleet.stop()
        testbed.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    report = build_report(
        meta=meta,
        routes=list(SWEEP_ROUTES),
        sweep=sweep,
        exact=exact,
        growth=grown,
        failovers=failovers,
        notes=notes,
        logs=logs,
        profiles=profiles,
        error=error,
    )
    json_path = write_json(report, results_dir / f"{args.name}.json")
    chart = write_chart(report, results_dir / f"{args.name}.png")
    print_report(report, json_path, chart)
    if error is not None:
        print(f"cluster-bench: FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
