"""Server CPU per request, measured in-process: the ASGI app called directly, no sockets.

    python -m bench.inprocess [--routes bare,db-uncached] [--rounds 7] [--requests 2000]
                              [--concurrency 64] [--profile db-uncached]

``make bench`` measures throughput through hypercorn and wrk, which on a shared
machine drifts by a third within a minute. This driver asks a narrower question,
steadily: how much CPU does this process spend per request of a route? It starts
real Redis and PostgreSQL (the launcher the tests use), migrates and seeds the
database like ``make bench`` (``bench/seed.py``), builds the same apps
(``bench/apps.py``), and sends each route ``--requests`` requests per round from
``--concurrency`` tasks straight into the ASGI callable. ``time.process_time()``
around each round gives the CPU per request (every thread of this process, so
aiosqlite's and the drivers' work counts; Redis' and PostgreSQL's own CPU does not);
the result is the median over ``--rounds`` interleaved rounds, and the ratio to bare
is bare's CPU per request over the route's. PostgreSQL's own CPU per request (its
server processes, from /proc) is printed beside it: in ``make bench`` the database
shares a core with wrk, so a query that is costly for the server caps throughput
whatever the app spends. HTTP parsing and socket writes are left
out, so these ratios are higher than ``make bench``'s: compare runs of this driver
with each other.

``--profile ROUTE`` runs one more round of that route under cProfile and prints the
functions with the largest cumulative and own time (``--profile-out`` keeps the
stats for ``snakeviz`` or ``pstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.apps import HUGE_LIMIT
from bench.routes import ROUTES, Route
from bench.seed import seed
from bench.stats import server_cpu_seconds

__all__ = ["AsgiDriver", "main", "xff_address"]

Scope = dict[str, Any]
Message = dict[str, Any]
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

#: Routes this driver knows how to serve in-process (the apps it builds).
IN_PROCESS_APPS = ("bare", "guards", "service")


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request got back."""

    status: int
    body: bytes


def xff_address(index: int) -> str:
    """Client ``index``'s address, as ``bench/cluster/wrk/hosts.lua`` spells it too."""
    return f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"


class AsgiDriver:
    """Sends GET requests straight into an ASGI app, as an HTTP/1.1 server would.

    ``clients``: each request names one of that many clients in ``X-Forwarded-For``
    (``10.a.b.c``, drawn at random from ``seed``), as a proxy in front would. The
    guards' parsed-address cache is per process: drivers that must not find each
    other's clients in it draw from different seeds.
    """

    def __init__(
        self,
        app: AsgiApp,
        headers: dict[str, str] | None = None,
        clients: int = 0,
        seed: str = "",
    ) -> None:
        self.app = app
        self.headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in {"host": "127.0.0.1", **(headers or {})}.items()
        ]
        self.clients = clients
        self._draw = random.Random(f"{seed}:{clients}").randrange

    def _request_headers(self) -> list[tuple[bytes, bytes]]:
        if not self.clients:
            return self.headers
        address = xff_address(self._draw(self.clients)).encode()
        return [*self.headers, (b"x-forwarded-for", address)]

    async def get(self, target: str) -> Answer:
        """``GET target`` (path and query): the status and the whole body."""
        path, _, query = target.partition("?")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": self._request_headers(),
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "extensions": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return Answer(status, b"".join(chunks))


def _targets(route: Route, count: int) -> list[str]:
    if route.path_template and route.path_range:
        template = route.path_template
        return [template.replace("{n}", str(i % route.path_range + 1)) for i in range(count)]
    return [route.path] * count


@dataclass(frozen=True, slots=True)
class Cost:
    """CPU seconds per request: this process's, and the database server's."""

    app: float
    database: float


async def _round(
    driver: AsgiDriver, targets: list[str], concurrency: int, database_pid: int | None = None
) -> Cost:
    """CPU per request for ``targets``, sent by ``concurrency`` tasks."""
    queue = list(reversed(targets))
    errors: list[str] = []

    async def worker() -> None:
        while queue:
            answer = await driver.get(queue.pop())
            if answer.status != 200:
                errors.append(f"{answer.status}: {answer.body[:200]!r}")

    database_before = server_cpu_seconds(database_pid) if database_pid else 0.0
    started = time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    spent = time.process_time() - started
    database = (server_cpu_seconds(database_pid) - database_before) if database_pid else 0.0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return Cost(spent / len(targets), database / len(targets))


def _apps(routes: list[Route]) -> dict[str, Any]:
    from bench import apps

    factories = {"bare": apps.bare_app, "guards": apps.guards_app, "service": apps.service_app}
    return {name: factories[name]() for name in dict.fromkeys(r.app for r in routes)}


async def measure(
    routes: list[Route], token: str, args: argparse.Namespace, database_pid: int | None = None
) -> dict[str, list[Cost]]:
    """Every route once per round (rotated order), ``args.requests`` requests each."""
    apps = _apps(routes)
    results: dict[str, list[Cost]] = {route.name: [] for route in routes}
    headers = {"Authorization": f"Bearer {token}"}
    for app in apps.values():
        await app.startup()
    try:
        drivers = {r.name: AsgiDriver(apps[r.app], headers if r.bearer else None) for r in routes}
        for route in routes:  # warm: pools, caches, prepared statements
            await _round(drivers[route.name], _targets(route, 200), args.concurrency)
        for index in range(args.rounds):
            shift = index % len(routes)
            for route in routes[shift:] + routes[:shift]:
                per_request = await _round(
                    drivers[route.name],
                    _targets(route, args.requests),
                    args.concurrency,
                    database_pid,
                )
                results[route.name].append(per_request)
        for name in (p.strip() for p in args.profile.split(",") if p.strip()):
            route = next(r for r in routes if r.name == name)
            profiler = cProfile.Profile()
            profiler.enable()
            await _round(drivers[name], _targets(route, args.requests), args.concurrency)
            profiler.disable()
            _print_profile(name, profiler, args.profile_out)
    finally:
        for app in apps.values():
            await app.shutdown()
    return results


def _print_profile(name: str, profiler: cProfile.Profile, out: Path | None) -> None:
    if out is not None:
        profiler.dump_stats(out.with_name(f"{out.stem}-{name}{out.suffix or '.prof'}"))
    for order in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(30)
        print(f"\nprofile {name}, by {order}:\n" + text.getvalue().split("\n\n", 2)[-1])


def _environment(database_url: str, redis_url: str) -> None:
    """The service's settings, as ``make bench`` gives them (read by ``Settings.from_env``)."""
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        API_RATE_LIMIT=f"{HUGE_LIMIT}/minute",
        LOGIN_RATE_LIMIT=f"{HUGE_LIMIT}/minute",
        PROTECT_LIMIT=f"{HUGE_LIMIT}/hour",
        APP_ENV="development",
        SECRET_KEY=secrets.token_urlsafe(48),
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("MEMCACHED_SERVERS", None)  # no cached route is measured here


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inprocess", description=(__doc__ or "").split("\n\n")[1]
    )
    parser.add_argument("--routes", default="db-uncached", help="bare is always added")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000, help="per route and round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--profile", default="", help="routes to run once more under cProfile")
    parser.add_argument("--profile-out", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in ("rounds", "requests", "concurrency", "users"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def _selected(spec: str) -> list[Route]:
    wanted = {"bare"} | {name.strip() for name in spec.split(",") if name.strip()}
    routes = [r for r in ROUTES if r.name in wanted]
    unknown = wanted - {r.name for r in routes}
    unserved = [r.name for r in routes if r.app not in IN_PROCESS_APPS]
    if unknown or unserved:
        raise SystemExit(f"not measurable in-process: {sorted(unknown) + unserved}")
    return routes


def main(argv: list[str] | None = None) -> int:
    """Measure and print CPU per request; 0 when every request answered 200."""
    args = parse_args(argv)
    routes = _selected(args.routes)
    from bench.run import _migrate
    from quart_api.testing import PostgresServer, RedisServer

    with RedisServer() as redis_server, PostgresServer() as postgres:
        database_url = postgres.create_database("bench")
        _migrate(database_url)
        seeded = asyncio.run(seed(database_url, args.users))
        _environment(database_url, redis_server.url)
        results = asyncio.run(measure(routes, seeded.token, args, postgres.pid))
    bare = statistics.median(cost.app for cost in results["bare"])
    print(
        f"\nin-process: {args.rounds} rounds x {args.requests} requests, "
        f"{args.concurrency} concurrent, python {sys.version.split()[0]}"
    )
    print(f"{'route':<14} {'cpu us/req':>10} {'min':>8} {'max':>8} {'x bare':>7} {'db us/req':>10}")
    for route in routes:
        values = [cost.app for cost in results[route.name]]
        median = statistics.median(values)
        database = statistics.median(cost.database for cost in results[route.name])
        print(
            f"{route.name:<14} {median * 1e6:>10.0f} {min(values) * 1e6:>8.0f} "
            f"{max(values) * 1e6:>8.0f} {bare / median:>7.3f} {database * 1e6:>10.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
