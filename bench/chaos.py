"""``make chaos``: backend faults under load, phase by phase, checked (issue 7).

    python -m bench.chaos [--connections C] [--users N] [--short] [--fuzz-examples N]

Starts real Redis, memcached and PostgreSQL on loopback (``quart_api.testing``),
migrates and seeds a database (``bench/seed.py``), serves the service of
``bench/apps.py`` with hypercorn (``DATABASE_TIMEOUT=1``, limits out of reach, the
server pinned to core 0 as in ``make bench``), then loads the full-stack route
(``GET /api/v1/users`` with a bearer token: auth, scope, rate limit, cache hit) with
wrk, one run per phase, while the backends fail:

    baseline | redis-down | redis-back | memcached-down | memcached-back | pg-paused | pg-back

(stop Redis for 5 s, then memcached for 5 s, then SIGSTOP PostgreSQL and its
backends for 3 s; about 30 s of load). Beside wrk, two probe streams record every
answer with its time: the same full-stack URL, and ``/bench/users-uncached`` with
``page`` and ``per_page`` varied, which really queries the database on every call.

Required, checked, and the exit code says so (0 all held, 1 one failed, 2 the
harness could not run):

- no 5xx while Redis or memcached are down or after they are back (fail open);
- while PostgreSQL is stalled, the database-backed probe answers 503
  ``application/problem+json`` within ``DATABASE_TIMEOUT`` + ``--margin`` (never
  hangs), and nothing times out;
- full service within ``--recovery`` (2 s) of each backend's return, without
  restarting the app: rate-limit headers again (Redis), cache hits again
  (memcached), 200 from the database route again (PostgreSQL).

Then, unless ``--fuzz-examples 0``, the longer fuzz run of the bad-input checks:
schemathesis against the live ``/openapi.json`` (real PostgreSQL, random seed) and
the model fuzz of ``tests/resilience/test_fuzz_models.py`` with many more examples
than CI runs. ``--short`` is the few-seconds-per-phase version the test suite runs.
Everything started here is stopped in a ``finally``; the whole run is bounded by
``--max-time``. Results: a table on stdout and ``bench/results/chaos.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import Terminated, start_harness
from bench.loadgen import WrkError, WrkResult, run_wrk
from bench.report import write_json
from bench.run import _app_env, _migrate  # make bench's own set-up, reused as it is
from bench.seed import seed
from bench.serve import (
    ROOT,
    HypercornApp,
    ServeError,
    http_get,
)
from bench.stats import foreign_cores, foreign_cpu_ticks
from quart_api.testing import MemcachedServer, PostgresServer, RedisServer, ServerError, free_port

__all__ = ["main"]

FULL_STACK = "/api/v1/users"
DB_ROUTE = "/bench/users-uncached"
PROBE_TIMEOUT = 10.0  # seconds; far past DATABASE_TIMEOUT: a probe this slow has hung
PROBE_PAUSE = 0.01  # seconds between one probe worker's requests
#: Phases whose every answer must be a non-5xx: Redis and memcached failing open.
STORE_PHASES = ("baseline", "redis-down", "redis-back", "memcached-down", "memcached-back")
#: Cores' worth of CPU other processes may use before a run counts as measured on a busy machine.
BUSY_CORES = 0.1
#: Summary lines of schemathesis ("922 generated, 1 found ...") and pytest ("7 passed in 3.6s").
_SUMMARY = re.compile(r"\d+ generated|\d+ (passed|failed)")


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of load; ``action`` runs at its start (``None``: nothing)."""

    name: str
    seconds: int
    action: Callable[[], object] | None


@dataclass(slots=True)
class PhaseRun:
    """A phase as it ran: when its action started and returned (monotonic), wrk's result."""

    name: str
    action_started: float
    action_done: float
    ended: float
    wrk: WrkResult


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe request: when, and what came back (``error`` when nothing did)."""

    stream: str  # "db" or "full"
    started: float
    ended: float
    status: int | None
    error: str | None
    problem_json: bool
    rate_headers: bool
    cache: str | None

    @property
    def latency(self) -> float:
        return self.ended - self.started


class Prober:
    """Probe streams in a thread of their own (own event loop), recording every answer.

    ``db``: the uncached list with a random page and page size per request (a
    database query each time); ``full``: the full-stack URL that wrk loads.
    """

    def __init__(
        self, base_url: str, token: str, *, db_workers: int = 4, full_workers: int = 2
    ) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.workers = {"db": db_workers, "full": full_workers}
        self.records: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[Probe]:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT + 5)
        return list(self.records)

    async def _main(self) -> None:
        rng = random.Random(7)
        paths: dict[str, Callable[[], str]] = {
            "db": lambda: f"{DB_ROUTE}?page={rng.randint(1, 50)}&per_page={rng.randint(1, 100)}",
            "full": lambda: FULL_STACK,
        }
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=PROBE_TIMEOUT
        ) as client:
            await asyncio.gather(
                *(
                    self._loop(client, stream, paths[stream])
                    for stream, count in self.workers.items()
                    for _ in range(count)
                )
            )

    async def _loop(self, client: httpx.AsyncClient, stream: str, path: Callable[[], str]) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = await client.get(path())
            except httpx.HTTPError as error:
                probe = Probe(
                    stream, started, time.monotonic(), None, repr(error), False, False, None
                )
            else:
                probe = Probe(
                    stream,
                    started,
                    time.monotonic(),
                    response.status_code,
                    None,
                    response.headers.get("Content-Type", "").startswith("application/problem+json"),
                    "RateLimit" in response.headers,
                    response.headers.get("X-Cache"),
                )
            self.records.append(probe)
            await asyncio.sleep(PROBE_PAUSE)


# -- checks -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One requirement of the scenario and whether it held."""

    name: str
    ok: bool
    detail: str


def _window(runs: list[PhaseRun], index: int, end: float) -> tuple[float, float]:
    """A phase's time span: from its action's start to the next phase's (its load included)."""
    stop = runs[index + 1].action_started if index + 1 < len(runs) else end
    return runs[index].action_started, stop


def _in(probes: list[Probe], span: tuple[float, float], stream: str | None = None) -> list[Probe]:
    return [p for p in probes if span[0] <= p.started < span[1] and stream in (None, p.stream)]


def _statuses(probes: list[Probe]) -> str:
    counts = Counter(str(p.status) if p.status is not None else "error" for p in probes)
    return " ".join(f"{code}:{n}" for code, n in sorted(counts.items())) or "-"


def _recovery(
    probes: list[Probe], back_at: float, span_end: float, full: Callable[[Probe], bool]
) -> float | None:
    """Seconds from ``back_at`` until every later probe of the phase is ``full``.

    The end of the last probe that was not full, counted from ``back_at`` (0 when
    every probe after ``back_at`` was full); None when no probe was full at all.
    """
    after = [p for p in probes if back_at <= p.started < span_end]
    good = [p for p in after if full(p)]
    if not good:
        return None
    bad_ends = [p.ended for p in after if not full(p)]
    return max(0.0, max(bad_ends) - back_at) if bad_ends else 0.0


def evaluate(
    runs: list[PhaseRun], probes: list[Probe], end: float, args: argparse.Namespace
) -> tuple[list[Check], dict[str, float | None]]:
    """The scenario's requirements, each a `Check`; and each backend's recovery time."""
    checks: list[Check] = []
    index = {run.name: i for i, run in enumerate(runs)}
    for name in STORE_PHASES:
        run = runs[index[name]]
        span = _window(runs, index[name], end)
        # Answered within the phase: a probe still running when PostgreSQL is paused
        # belongs to the stall, whenever it started.
        in_phase = [p for p in _in(probes, span) if p.ended < span[1]]
        fives = sum(1 for p in in_phase if p.status is not None and p.status >= 500)
        checks.append(
            Check(
                f"no 5xx in {name}",
                run.wrk.server_errors == 0 and fives == 0,
                f"wrk {run.wrk.server_errors}, probes {fives}",
            )
        )
    stuck = [p for p in probes if p.error is not None]
    socket_errors = {run.name: run.wrk.socket_errors for run in runs if run.wrk.socket_errors}
    checks.append(
        Check(
            "nothing hangs or is refused",
            not stuck and not socket_errors,
            f"probe errors {len(stuck)} {stuck[:1]}, wrk socket errors {socket_errors or 0}",
        )
    )

    bound = args.db_timeout + args.margin
    paused, back = runs[index["pg-paused"]], runs[index["pg-back"]]
    stalled = [
        p for p in probes if p.started < back.action_started and p.ended > paused.action_started
    ]
    db_stalled = [p for p in stalled if p.stream == "db"]
    # Started once SIGSTOP had landed and answered before SIGCONT: only a 503 is right.
    inside = [
        p for p in db_stalled if p.started >= paused.action_done and p.ended < back.action_started
    ]
    slow = [p for p in stalled if p.latency > bound]
    wrong = [p for p in inside if p.status != 503 or not p.problem_json]
    slowest = max(stalled, key=lambda p: p.latency, default=None)
    checks.append(
        Check(
            f"pg stalled: db route 503 problem+json within {bound:g} s",
            bool(inside) and not wrong and not slow,
            f"{len(inside)} answered inside the stall ({_statuses(inside)}), "
            f"{len(wrong)} wrong, {len(slow)} slower"
            + (
                f"; slowest {slowest.latency:.2f} s ({slowest.stream} {slowest.status}, "
                f"sent {slowest.started - paused.action_done:+.2f} s after the pause)"
                if slowest is not None
                else ""
            ),
        )
    )

    recovered: dict[str, float | None] = {}
    criteria: dict[str, tuple[str, str, Callable[[Probe], bool]]] = {
        "redis": ("redis-back", "full", lambda p: p.status == 200 and p.rate_headers),
        "memcached": ("memcached-back", "full", lambda p: p.status == 200 and p.cache == "hit"),
        "postgresql": ("pg-back", "db", lambda p: p.status == 200),
    }
    what = {"redis": "rate-limit headers", "memcached": "cache hits", "postgresql": "200s"}
    for backend, (phase, stream, full) in criteria.items():
        i = index[phase]
        seconds = _recovery(
            _in(probes, _window(runs, i, end), stream),
            runs[i].action_done,
            _window(runs, i, end)[1],
            full,
        )
        recovered[backend] = seconds
        checks.append(
            Check(
                f"{backend} back: {what[backend]} within {args.recovery:g} s",
                seconds is not None and seconds <= args.recovery,
                "never" if seconds is None else f"after {seconds:.2f} s",
            )
        )
    return checks, recovered


# -- output -------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def report_rows(
    runs: list[PhaseRun], probes: list[Probe], end: float, recovered: dict[str, float | None]
) -> list[list[str]]:
    back = {"redis-back": "redis", "memcached-back": "memcached", "pg-back": "postgresql"}
    rows = []
    for i, run in enumerate(runs):
        span = _window(runs, i, end)
        db = _in(probes, span, "db")
        seconds = recovered.get(back.get(run.name, ""))
        rows.append(
            [
                run.name,
                f"{run.ended - run.action_done:.1f}",
                f"{run.wrk.rps:.0f}",
                f"{run.wrk.latency_ms['p50']:.1f}",
                f"{run.wrk.latency_ms['p99']:.1f}",
                " ".join(f"{c}:{n}" for c, n in run.wrk.statuses.items()) or "-",
                str(run.wrk.socket_errors),
                _statuses(db),
                f"{max((p.latency for p in db), default=0) * 1000:.0f}",
                "" if run.name not in back else ("never" if seconds is None else f"{seconds:.2f}"),
            ]
        )
    return rows


# -- the scenario -------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--users", type=int, default=1000, help="users to seed (1000)")
    parser.add_argument("--db-timeout", type=float, default=1.0, help="DATABASE_TIMEOUT (1 s)")
    parser.add_argument("--margin", type=float, default=1.0, help="slack on the timeout (1 s)")
    parser.add_argument("--recovery", type=float, default=2.0, help="bound on recovery (2 s)")
    parser.add_argument(
        "--fuzz-examples", type=int, default=200, help="examples per fuzz test; 0 skips (200)"
    )
    parser.add_argument("--short", action="store_true", help="2 s phases, no fuzz run")
    parser.add_argument("--max-time", type=float, default=600.0, help="bound on the whole run (s)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.short:
        args.fuzz_examples = 0
        args.users = min(args.users, 200)
    if args.connections < 1 or args.users < 1 or args.db_timeout <= 0:
        parser.error("--connections and --users must be >= 1, --db-timeout > 0")
    return args


def phases(
    args: argparse.Namespace, redis: RedisServer, memcached: MemcachedServer, pg: PostgresServer
) -> list[Phase]:
    """The fault sequence; PostgreSQL is paused for longer than ``DATABASE_TIMEOUT``."""
    down, back, stall = (2, 2, 3) if args.short else (5, 4, 3)
    # Long enough for probes sent during the stall to time out during it.
    stall = max(stall, math.ceil(2 * args.db_timeout) + 1)
    return [
        Phase("baseline", back, None),
        Phase("redis-down", down, redis.stop),
        Phase("redis-back", back, redis.start),
        Phase("memcached-down", down, memcached.stop),
        Phase("memcached-back", back, memcached.start),
        Phase("pg-paused", stall, pg.pause),
        Phase("pg-back", back, pg.resume),
    ]


@contextlib.contextmanager
def served(env: dict[str, str], logs: Path, cores: frozenset[int] | None) -> Iterator[HypercornApp]:
    app = HypercornApp(
        name="chaos",
        target="bench.apps:service_app()",
        port=free_port(),
        env=env,
        log_path=logs / "chaos.log",
        cores=cores,
        ready_path="/healthz",
    )
    try:
        app.log_path.unlink(missing_ok=True)
        app.start()
        app.wait_ready(time.monotonic() + 60)
        yield app
    finally:
        app.stop()


def fuzz(app: HypercornApp, token: str, examples: int, deadline: float, logs: Path) -> list[Check]:
    """The longer bad-input run: schemathesis on the live API, the model fuzz with pytest."""
    seed_ = random.randrange(1, 2**31)
    schemathesis = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{app.base_url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error",
        "--exclude-method", "DELETE",  # keep the admin and its token for the whole run
        "--max-examples", str(max(1, examples // 10)),
        "--seed", str(seed_),
        "--request-timeout", "10",
        "--workers", "2",
        "--no-color",
    ]  # fmt: skip
    model_fuzz = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/resilience/test_fuzz_models.py",
    ]  # fmt: skip
    env = {**os.environ, "QUART_API_FUZZ_EXAMPLES": str(examples), "QUART_API_FUZZ_RANDOM": "1"}
    checks = []
    for label, name, command in (
        ("schemathesis", f"schemathesis on /openapi.json, no 5xx (seed {seed_})", schemathesis),
        ("model-fuzz", f"model fuzz, {examples} examples a test, random seed", model_fuzz),
    ):
        budget = max(10.0, deadline - time.monotonic())
        print(f"chaos: {name} ...", flush=True)
        # schemathesis keeps a cache of failures in its working directory: not in the repo.
        cwd = logs if label == "schemathesis" else ROOT
        try:
            done = subprocess.run(
                command, cwd=cwd, env=env, capture_output=True, text=True, timeout=budget
            )
        except subprocess.TimeoutExpired:
            checks.append(Check(name, False, f"did not finish within {budget:.0f} s"))
            continue
        output = done.stdout + done.stderr
        log = logs / f"{label}.log"
        log.write_text(output)
        lines = output.splitlines()
        summary = [line.strip(" =") for line in lines if _SUMMARY.search(line)]
        detail = (summary[-1] if summary else "(no summary)")[:120]
        failing = [line.strip() for line in lines if line.strip().startswith("curl -X")]
        if failing:  # schemathesis's reproduction of each failure
            detail += "; e.g. " + failing[0].replace("-H 'Authorization: [Filtered]' ", "")
        detail += f"; log {log}"
        checks.append(Check(name, done.returncode == 0, detail))
        if done.returncode != 0:
            print(output[-4000:], flush=True)
    return checks


def main(argv: list[str] | None = None) -> int:
    """Run the scenario; 0 when every requirement held, 1 when one failed, 2 on set-up errors."""
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.max_time
    harness = start_harness("chaos", 1)  # the stores, wrk and the probes keep off the server's core
    if harness is None:
        return 2
    wrk, cores = harness.wrk, harness.cores
    results: Path = args.results_dir
    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[PhaseRun] = []
    probes: list[Probe] = []
    checks: list[Check] = []
    recovered: dict[str, float | None] = {}
    error: str | None = None
    end = started
    foreign = 0.0
    try:
        with RedisServer() as redis, MemcachedServer() as memcached, PostgresServer() as pg:
            database_url = pg.create_database("chaos")
            _migrate(database_url)
            seeded = asyncio.run(seed(database_url, args.users))
            env = _app_env(database_url, redis, memcached)
            env["DATABASE_TIMEOUT"] = f"{args.db_timeout:g}"
            with served(env, logs, cores.server) as app:
                bearer = {"Authorization": f"Bearer {seeded.token}"}
                for path in (FULL_STACK, FULL_STACK, f"{DB_ROUTE}?page=1"):
                    status, body = http_get(app.base_url + path, bearer, timeout=10)
                    if status != 200:
                        raise ServeError(f"warm-up {path} got {status}: {body[:300]!r}")
                sequence = phases(args, redis, memcached, pg)
                print(
                    f"chaos: {seeded.users} users; {args.connections} connections on "
                    f"GET {FULL_STACK} (bearer, full stack) and probes on {DB_ROUTE}; "
                    f"DATABASE_TIMEOUT={args.db_timeout:g} s; {cores.note}",
                    flush=True,
                )
                prober = Prober(app.base_url, seeded.token)
                prober.start()
                cpu_before, load_started = foreign_cpu_ticks(), time.monotonic()
                try:
                    for phase in sequence:
                        if time.monotonic() + phase.seconds + 30 > deadline:
                            raise ServeError(f"--max-time {args.max_time:.0f} s reached")
                        action_started = time.monotonic()
                        if phase.action is not None:
                            phase.action()
                        action_done = time.monotonic()
                        result = run_wrk(
                            app.base_url + FULL_STACK,
                            duration=phase.seconds,
                            connections=args.connections,
                            timeout=5,
                            headers=bearer,
                            wrk=wrk,
                        )
                        runs.append(
                            PhaseRun(
                                phase.name, action_started, action_done, time.monotonic(), result
                            )
                        )
                        print(f"  {phase.name:<15} {result.rps:>8.0f} req/s", flush=True)
                finally:
                    pg.ensure_running()  # whatever happened, the backends are whole again
                    redis.ensure_running()
                    memcached.ensure_running()
                    end = time.monotonic()
                    probes = prober.stop()
                    foreign = foreign_cores(cpu_before, foreign_cpu_ticks(), end - load_started)
                checks, recovered = evaluate(runs, probes, end, args)
                if args.fuzz_examples > 0:
                    checks += fuzz(app, seeded.token, args.fuzz_examples, deadline, logs)
    except (Terminated, KeyboardInterrupt) as exc:
        error = f"interrupted: {exc}"
    except (ServerError, ServeError, WrkError, OSError, subprocess.SubprocessError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    if runs:
        headers = [
            "phase", "s", "req/s", "p50 ms", "p99 ms", "statuses (wrk)", "sock err",
            "db probes", "db max ms", "back in s",
        ]  # fmt: skip
        print()
        print(_table(headers, report_rows(runs, probes, end, recovered)))
    if foreign >= BUSY_CORES:
        print(
            f"\nchaos: WARNING: other processes used {foreign:.2f} of a core during the load; "
            "the timing bounds (DATABASE_TIMEOUT + margin, recovery) may fail for that "
            "reason alone: rerun on a quiet machine."
        )
    print()
    for check in checks:
        print(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    write_json(
        {
            "elapsed_s": round(time.monotonic() - started, 1),
            "foreign_cpu_cores": foreign,
            "error": error,
            "phases": [
                {"phase": r.name, "seconds": round(r.ended - r.action_done, 2), **r.wrk.as_dict()}
                for r in runs
            ],
            "probes": {
                r.name: _statuses(_in(probes, _window(runs, i, end))) for i, r in enumerate(runs)
            },
            "recovered_s": recovered,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
        },
        results / "chaos.json",
    )
    if error is not None:
        print(f"chaos: FAILED to run: {error}", file=sys.stderr)
        return 2
    failed = [c.name for c in checks if not c.ok]
    print(f"\nchaos: {'FAILED: ' + ', '.join(failed) if failed else 'every requirement held'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
