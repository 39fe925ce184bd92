"""``make bench``: what the guards cost, measured side by side with a bare route and peers.

    python -m bench.run [--workers N] [--duration S] [--rounds R] [--connections C] [--smoke]

Starts real Redis, memcached and PostgreSQL on loopback (``quart_api.testing``, the
launcher the tests use), migrates a fresh database and seeds 10,000 users, serves
each app of ``bench/apps.py`` with hypercorn (asyncio's loop as in hypercorn.toml,
raised backlog, pinned to core 0), and drives every route with wrk (pinned with the
stores to the other core).

Routes are interleaved round by round (each round in a rotated order), and every
run of a route sits between two runs of bare. Two ratios to bare come out: of medians
over the rounds, and paired (each run over the mean of the bare runs around it, whose
median cancels the drift of a shared host); a target holds only if both say so
(``bench/report.py`` says why both).
Around every run it reads the stores' counters (Redis commands and read events, the
guards' own round-trip counter, memcached gets), so costs per request are reported
next to speed. Then 1,000 connections for 30 s on the full stack, which must end
with no socket error and no 5xx.

Results: a table on stdout, ``bench/results/<name>.json`` and ``<name>.png``
(throughput and p99 per route), and the hypercorn logs under ``bench/results/logs/``.
``--smoke`` is the few-seconds version the test suite runs: one short round, few
connections, no warm-up and no high-concurrency run. Everything started here is
stopped in a ``finally``, and the whole run is bounded by ``--max-time``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.apps import HUGE_LIMIT, USER_HEADER
from bench.harness import Terminated, start_harness
from bench.loadgen import WrkError, WrkResult, run_wrk, wrk_version
from bench.profile import find_py_spy, start_recording, summarize
from bench.report import build_report, print_report, write_chart, write_json
from bench.routes import APPS, ROUTES, AppSpec, Route
from bench.seed import seed
from bench.serve import (
    ROOT,
    Cores,
    HypercornApp,
    ServeError,
    http_get,
    somaxconn,
)
from bench.stats import (
    foreign_cores,
    foreign_cpu_ticks,
    per_request,
    server_cpu_seconds,
    snapshot,
)
from quart_api.testing import MemcachedServer, PostgresServer, RedisServer, ServerError, free_port

__all__ = ["main"]


HIGH_CONCURRENCY_ROUTE = "full-stack"
SETTLE_SECONDS = 0.3
HUGE_RATE = f"{HUGE_LIMIT}/minute"  # see HUGE_LIMIT: high, yet charged on every request


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--workers", type=int, default=1, help="hypercorn workers per app (1)")
    parser.add_argument(
        "--worker-class",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="hypercorn's event loop (asyncio, as hypercorn.toml)",
    )
    # Short runs, several rounds: this kind of machine drifts within seconds, and each
    # route's run is compared with the bare runs just before and after it.
    parser.add_argument("--duration", type=int, default=2, help="seconds per run (2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, >= 3 (5)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of unrecorded load per route"
    )
    parser.add_argument("--users", type=int, default=10_000, help="users to seed (10000)")
    parser.add_argument("--hc-connections", type=int, default=1000, help="high-concurrency run")
    parser.add_argument("--hc-duration", type=int, default=30, help="high-concurrency seconds")
    parser.add_argument("--no-hc", action="store_true", help="skip the high-concurrency run")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    parser.add_argument("--routes", default="", help="comma-separated subset of routes")
    parser.add_argument(
        "--profile",
        default="",
        help="comma-separated routes to sample with py-spy after measuring (bench/profile.py)",
    )
    parser.add_argument("--max-time", type=float, default=900.0, help="bound on the whole run (s)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default=None, help="base name of the JSON/PNG (bench|smoke)")
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds: 1 round of 1 s, 8 connections"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.connections, args.warmup = 1, 1, 8, 0
        args.no_hc = True
        args.max_time = min(args.max_time, 100.0)
    if args.name is None:
        args.name = "smoke" if args.smoke else "bench"
    for name in ("workers", "duration", "rounds", "connections", "users"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def _selected(args: argparse.Namespace, skipped: dict[str, str]) -> list[Route]:
    wanted = {r.strip() for r in args.routes.split(",") if r.strip()}
    unknown = wanted - {r.name for r in ROUTES}
    if unknown:
        raise SystemExit(f"unknown routes {sorted(unknown)}; known: {[r.name for r in ROUTES]}")
    routes = []
    for route in ROUTES:
        spec = APPS[route.app]
        if wanted and route.name not in wanted and route.name != "bare":
            continue  # bare always runs: every ratio needs it
        if spec.needs is not None and args.no_peers:
            skipped[route.name] = "--no-peers"
        elif spec.needs is not None and importlib.util.find_spec(spec.needs) is None:
            skipped[route.name] = f"{spec.needs} is not installed (pip install -e '.[bench]')"
        else:
            routes.append(route)
    return routes


def _migrate(database_url: str) -> None:
    """``alembic upgrade head``: the schema a deployment gets, indexes included."""
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ServerError(f"alembic upgrade head failed:\n{done.stdout}\n{done.stderr}")


def _app_env(database_url: str, redis: RedisServer, memcached: MemcachedServer) -> dict[str, str]:
    """The service's settings for a benchmark: real stores, limits never reached, cheap argon2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PROMETHEUS"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis.url,
        MEMCACHED_SERVERS=memcached.address,
        API_RATE_LIMIT=HUGE_RATE,
        LOGIN_RATE_LIMIT=HUGE_RATE,
        PROTECT_LIMIT=f"{HUGE_LIMIT}/hour",
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="8",
        ARGON2_PARALLELISM="1",
        APP_ENV="development",
        SECRET_KEY=secrets.token_urlsafe(48),  # one key for every worker
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def _headers(route: Route, token: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    if route.bearer:
        headers["Authorization"] = f"Bearer {token}"
    if route.user:
        headers[USER_HEADER] = "bench-user"
    return headers


def _warm(route: Route, app: HypercornApp, token: str) -> None:
    """A few requests first: caches filled, pools and lazy store connections opened."""
    path = route.path_template.replace("{n}", "1") if route.path_template else route.path
    for _ in range(3):
        status, body = http_get(app.base_url + path, _headers(route, token), timeout=10)
        if status != 200:
            raise ServeError(f"warm-up of {route.name} got {status}: {body[:300]!r}")


def _load(
    route: Route,
    app: HypercornApp,
    token: str,
    *,
    duration: int,
    connections: int,
    timeout: int = 5,
    wrk: str,
) -> WrkResult:
    return run_wrk(
        app.base_url + route.path,
        duration=duration,
        connections=connections,
        timeout=timeout,
        headers=_headers(route, token),
        path_template=route.path_template,
        path_range=route.path_range,
        wrk=wrk,
    )


@contextlib.contextmanager
def _served(
    specs: list[AppSpec],
    env: dict[str, str],
    args: argparse.Namespace,
    cores: Cores,
    logs: Path,
    deadline: float,
) -> Iterator[dict[str, HypercornApp]]:
    """Start every app at once (they boot in parallel), wait for each; stop all after."""
    apps = {
        spec.name: HypercornApp(
            name=spec.name,
            target=spec.target,
            port=free_port(),
            env=env,
            log_path=logs / f"{spec.name}.log",
            workers=args.workers,
            worker_class=args.worker_class,
            cores=cores.server,
            ready_path=spec.ready_path,
        )
        for spec in specs
    }
    try:
        for app in apps.values():
            app.start()
        for app in apps.values():
            app.wait_ready(min(deadline, time.monotonic() + 60))
        yield apps
    finally:
        for app in apps.values():
            app.stop()


def _profile(
    route: Route, app: HypercornApp, token: str, args: argparse.Namespace, wrk: str, out: Path
) -> dict[str, Any]:
    """Sample the server with py-spy while wrk loads ``route`` (see ``bench/profile.py``)."""
    py_spy = find_py_spy()
    if py_spy is None or app.process is None:
        return {"error": "py-spy not installed (pip install -e '.[bench]')"}
    raw = out / f"profile-{route.name}.txt"
    raw.unlink(missing_ok=True)
    recorder = start_recording(py_spy, app.process.pid, args.duration, raw)
    try:
        _load(route, app, token, duration=args.duration, connections=args.connections, wrk=wrk)
        _, err = recorder.communicate(timeout=args.duration + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if not raw.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
    return {"stacks": str(raw), **summarize(raw)}


def _measure(
    routes: list[Route],
    apps: dict[str, HypercornApp],
    token: str,
    args: argparse.Namespace,
    stores: tuple[tuple[str, int], tuple[str, int]],
    wrk: str,
    deadline: float,
    database_pid: int | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every route once per round, in an order rotated each round, each between two bare runs.

    This kind of machine changes speed by a third within a minute (other tenants of
    the host), which a median over rounds cannot always tell apart from a cost. So
    every run of a route also records the mean of the two bare runs around it, a few
    seconds apart, for the paired ratio. (``--smoke`` runs bare once per round: it
    checks that the harness works, not speed.)
    """
    runs: dict[str, list[dict[str, Any]]] = {route.name: [] for route in routes}
    notes: list[str] = []
    bare = next(route for route in routes if route.name == "bare")
    others = [route for route in routes if route is not bare]
    measure = functools.partial(
        _run_once,
        apps=apps,
        token=token,
        args=args,
        stores=stores,
        wrk=wrk,
        database_pid=database_pid,
    )
    for index in range(args.rounds):
        shift = index % len(others) if others else 0
        before = None
        for route in others[shift:] + others[:shift]:
            if time.monotonic() + 2 * args.duration + 10 > deadline:
                notes.append(
                    f"stopped in round {index + 1}: --max-time {args.max_time:.0f} s reached"
                )
                return runs, notes
            if before is None:
                before = measure(bare, index)
                runs[bare.name].append(before)
            run = measure(route, index)
            if args.smoke:
                after = before
            else:
                after = measure(bare, index)
                runs[bare.name].append(after)
            run["bare_rps_around"] = round((before["rps"] + after["rps"]) / 2, 1)
            runs[route.name].append(run)
            before = after
        if before is None:  # bare alone
            runs[bare.name].append(measure(bare, index))
    return runs, notes


def _run_once(
    route: Route,
    index: int,
    *,
    apps: dict[str, HypercornApp],
    token: str,
    args: argparse.Namespace,
    stores: tuple[tuple[str, int], tuple[str, int]],
    wrk: str,
    database_pid: int | None = None,
) -> dict[str, Any]:
    """One wrk run of ``route``, with the store counters and the CPU read around it.

    PostgreSQL's CPU is read too: it shares a core with wrk, so a route whose queries
    cost the database much can be held back there, not by the app.
    """
    app = apps[route.app]
    stats_url = app.base_url if route.app in ("guards", "service") else None
    before = snapshot(*stores, stats_url)
    cpu_before = foreign_cpu_ticks()
    server_before = server_cpu_seconds(app.pid)
    database_before = server_cpu_seconds(database_pid) if database_pid else 0.0
    result = _load(route, app, token, duration=args.duration, connections=args.connections, wrk=wrk)
    foreign = foreign_cores(cpu_before, foreign_cpu_ticks(), result.duration_s)
    # Requests already sent when wrk stopped are still being served: let them
    # finish, so their store calls count here and not in the next run.
    time.sleep(SETTLE_SECONDS)
    server_cpu = server_cpu_seconds(app.pid) - server_before
    database_cpu = server_cpu_seconds(database_pid) - database_before if database_pid else 0.0
    after = snapshot(*stores, stats_url)
    costs = per_request(before, after, result.requests)
    if database_pid and result.requests:
        costs["database_cpu_us_per_request"] = round(database_cpu / result.requests * 1e6, 1)
    if args.workers > 1:  # /_bench/stats reaches one worker only
        costs = {k: v for k, v in costs.items() if not k.startswith(("store_", "guard_"))}
    errors = result.socket_errors + result.non_2xx
    print(
        f"  round {index + 1} {route.name:<22} {result.rps:>9.0f} req/s  "
        f"p99 {result.latency_ms['p99']:>7.2f} ms  errors {errors}"
        + (f"  (other processes used {foreign:.2f} core)" if foreign >= 0.1 else ""),
        flush=True,
    )
    return {
        "round": index + 1,
        **result.as_dict(),
        "foreign_cpu_cores": foreign,
        "server_cpu_us_per_request": (
            round(server_cpu / result.requests * 1e6, 1) if result.requests else None
        ),
        "server_cpu_cores": round(server_cpu / result.duration_s, 3) if result.duration_s else None,
        "per_request": costs,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets are reported, not enforced), else 1 or 2."""
    args = parse_args(argv)
    started_wall = time.time()
    started = time.monotonic()
    deadline = started + args.max_time
    harness = start_harness("bench", args.workers)
    if harness is None:
        return 2
    wrk, cores, nofile = harness.wrk, harness.cores, harness.open_files
    skipped: dict[str, str] = {}
    routes = _selected(args, skipped)
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    logs = results_dir / "logs"
    for old in logs.glob("*.log") if logs.exists() else []:
        old.unlink()

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_wall)),
        "commit": _commit(),
        "python": platform.python_version(),
        "wrk": wrk_version(wrk),
        "cpus": os.cpu_count(),
        "pinning": cores.as_dict(),
        "workers": args.workers,
        "worker_class": args.worker_class,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "connections": args.connections,
        "users_seeded": args.users,
        "smoke": args.smoke,
        "somaxconn": somaxconn(),
        "open_files_limit": nofile,
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    high: dict[str, Any] | None = None
    profiles: dict[str, dict[str, Any]] = {}
    error: str | None = None
    print(
        f"bench: {len(routes)} routes x {args.rounds} rounds x {args.duration} s, "
        f"{args.connections} connections, {args.workers} worker(s); {cores.note}",
        flush=True,
    )
    try:
        with RedisServer() as redis_server, MemcachedServer() as memcached, PostgresServer() as pg:
            database_url = pg.create_database("bench")
            _migrate(database_url)
            seeded = asyncio.run(seed(database_url, args.users))
            print(
                f"bench: servers up, {seeded.users} users seeded "
                f"({time.monotonic() - started:.1f} s)",
                flush=True,
            )
            env = _app_env(database_url, redis_server, memcached)
            specs = [APPS[name] for name in dict.fromkeys(route.app for route in routes)]
            with _served(specs, env, args, cores, logs, deadline) as apps:
                for route in routes:
                    _warm(route, apps[route.app], seeded.token)
                if args.warmup > 0:
                    for route in routes:
                        _load(
                            route,
                            apps[route.app],
                            seeded.token,
                            duration=args.warmup,
                            connections=args.connections,
                            wrk=wrk,
                        )
                stores = ((redis_server.host, redis_server.port), (memcached.host, memcached.port))
                runs, notes = _measure(
                    routes, apps, seeded.token, args, stores, wrk, deadline, pg.pid
                )
                hc_route = next((r for r in routes if r.name == HIGH_CONCURRENCY_ROUTE), None)
                if not args.no_hc and hc_route is not None:
                    if time.monotonic() + args.hc_duration + 20 > deadline:
                        notes.append("high-concurrency run skipped: --max-time reached")
                    else:
                        print(
                            f"bench: {args.hc_connections} connections for {args.hc_duration} s "
                            f"on {hc_route.name}",
                            flush=True,
                        )
                        result = _load(
                            hc_route,
                            apps[hc_route.app],
                            seeded.token,
                            duration=args.hc_duration,
                            connections=args.hc_connections,
                            timeout=10,
                            wrk=wrk,
                        )
                        high = {
                            "route": hc_route.name,
                            "connections": args.hc_connections,
                            "wrk_timeout_s": 10,
                            **result.as_dict(),
                        }
                for name in (p.strip() for p in args.profile.split(",") if p.strip()):
                    target = next((r for r in routes if r.name == name), None)
                    if target is not None:
                        profiles[name] = _profile(
                            target, apps[target.app], seeded.token, args, wrk, results_dir
                        )
    except (Terminated, KeyboardInterrupt) as exc:
        error = f"interrupted: {exc}"
    except (ServerError, ServeError, WrkError, OSError, subprocess.SubprocessError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    report = build_report(
        meta=meta,
        routes=[r for r in ROUTES if r.name in runs],
        runs=runs,
        skipped=skipped,
        high=high,
        notes=notes,
        logs=logs,
        profiles=profiles,
        error=error,
    )
    json_path = write_json(report, results_dir / f"{args.name}.json")
    chart = write_chart(report, results_dir / f"{args.name}.png")
    print_report(report, json_path, chart)
    if error is not None:
        print(f"bench: FAILED: {error}", file=sys.stderr)
        return 1
    return 0


def _commit() -> str:
    """The commit measured, with ``+dirty`` when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty.strip() else "")


if __name__ == "__main__":
    raise SystemExit(main())
