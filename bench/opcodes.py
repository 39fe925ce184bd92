"""Bytecodes per request, per route: a cost measure that is a count, not a time.

    python -m bench.opcodes [--routes rate_limited,full-stack] [--requests 400]
                            [--top 30] [--against bare] [--redis cluster]
                            [--clients 100,10000,1000000]

Timings on a shared virtual machine move by a third within a minute, so a change that
saves 5 % of a route's CPU cannot be seen in ``make bench`` or even in
``bench.inprocess``. This driver counts instead: it serves the routes of
``bench/routes.py`` in-process (the ASGI app called directly, like
``bench.inprocess``), on real Redis, memcached and PostgreSQL, and counts the Python
bytecodes executed per request with ``sys.settrace`` opcode events, by function. The
same code on the same requests executes the same bytecodes, whatever else the machine
is doing, so two runs of one commit agree to within a few bytecodes (the per-tick
batching of store calls varies a little with timing), and the difference between
two commits is what the change did.

A bytecode is not a unit of time: work done in C (json, hashing, socket writes,
the interpreter's own frame set-up) is not counted, and one bytecode may call into a
costly C function. Read the counts as "how much Python a request runs, and where",
beside ``bench.inprocess``'s CPU per request; ``valgrind --tool=callgrind`` counts
machine instructions, C included, at fifty times the run time.

Per route it prints the total per request, the part above ``--against`` (bare), and
the ``--top`` functions by their own bytecodes above that route's. With ``--clients``,
each route is measured once per client count, every request naming one of that many
clients in ``X-Forwarded-For`` (behind one trusted proxy): whether a request's work
grows with the number of clients, counted rather than timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from types import FrameType
from typing import Any

from bench.inprocess import AsgiDriver, _apps, _environment, _selected, _targets
from bench.seed import seed

__all__ = ["count_opcodes", "main"]

Where = tuple[str, int, str]


def _short(filename: str) -> str:
    """``werkzeug/local.py``, ``quart_api/auth.py``, ``asyncio/tasks.py``."""
    for marker in ("site-packages/", "/quart_api/", "/bench/", "/lib/python3."):
        _, found, tail = filename.rpartition(marker)
        if not found:
            continue
        if marker == "site-packages/":
            return tail
        if marker == "/lib/python3.":
            return tail.partition("/")[2]
        return marker.strip("/") + "/" + tail
    return filename


class _Counter:
    """A ``sys.settrace`` function counting opcode events by code object, and frames.

    Frames (Python calls, and each resumption of a coroutine or generator) cost C
    work that no bytecode counts: setting up and clearing the frame.
    """

    def __init__(self) -> None:
        self.counts: Counter[Where] = Counter()
        #: Python frames entered (calls, and resumptions of coroutines and generators)
        self.frames: Counter[Where] = Counter()

    def global_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        self.frames[(code.co_filename, code.co_firstlineno, code.co_name)] += 1
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self.local_trace

    def local_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            self.counts[(code.co_filename, code.co_firstlineno, code.co_name)] += 1
        return self.local_trace


async def count_opcodes(driver: AsgiDriver, targets: list[str], concurrency: int) -> _Counter:
    """Bytecodes run while ``targets`` are served, by function, and frames entered
    (all requests together)."""
    queue = list(reversed(targets))
    failures: list[int] = []

    async def worker() -> None:
        while queue:
            answer = await driver.get(queue.pop())
            if answer.status != 200:
                failures.append(answer.status)

    counter = _Counter()
    sys.settrace(counter.global_trace)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    finally:
        sys.settrace(None)
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first with {failures[0]}")
    return counter


async def _measure(args: argparse.Namespace, token: str) -> dict[str, _Counter]:
    routes = _selected(args.routes + "," + args.against)
    apps = _apps(routes)
    headers = {"Authorization": f"Bearer {token}"}
    for app in apps.values():
        await app.startup()
    try:
        results: dict[str, _Counter] = {}
        for route in routes:
            extra = {"X-Bench-User": "bench-user"} if route.user else {}
            counts = [0] if route.name == args.against else _client_counts(args.clients)
            for clients in counts:
                driver = AsgiDriver(
                    apps[route.app],
                    {**(headers if route.bearer else {}), **extra},
                    clients,
                    seed=route.name,  # another route's clients are not cached for this one
                )
                await count_opcodes(driver, _targets(route, 300), args.concurrency)  # warm
                name = f"{route.name}, {clients:,} clients" if clients else route.name
                results[name] = await count_opcodes(
                    driver, _targets(route, args.requests), args.concurrency
                )
        return results
    finally:
        for app in apps.values():
            await app.shutdown()


def _report(name: str, counted: _Counter, against: _Counter, args: argparse.Namespace) -> None:
    per = args.requests
    counts, base = counted.counts, against.counts
    total = sum(counts.values()) / per
    above = total - sum(base.values()) / per
    frames = counted.frames.total() / per
    print(
        f"\n{name}: {total:,.0f} bytecodes/request ({above:+,.0f} against {args.against}), "
        f"{frames:,.0f} frames/request ({frames - against.frames.total() / per:+,.0f})"
    )
    if not args.top or counted is against:
        return
    if args.frames:
        counts, base = counted.frames, against.frames
    delta = {where: (counts[where] - base.get(where, 0)) / per for where in counts | base}
    ranked = sorted(delta.items(), key=lambda item: -abs(item[1]))[: args.top]
    for (filename, line, function), value in ranked:
        print(f"  {value:+9.1f}  {_short(filename)}:{line} {function}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.opcodes", description=(__doc__ or "").split("\n\n")[1]
    )
    parser.add_argument("--routes", default="rate_limited,cached,full-stack,db-uncached")
    parser.add_argument("--against", default="bare", help="the route the others are compared to")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top", type=int, default=25, help="functions listed per route")
    parser.add_argument(
        "--frames", action="store_true", help="list functions by frames entered, not bytecodes"
    )
    parser.add_argument(
        "--clients",
        default="",
        help="client counts, e.g. 100,10000,1000000: each route is measured once per count, "
        "each request naming one of that many clients in X-Forwarded-For",
    )
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument(
        "--redis",
        choices=("server", "cluster", "sentinel"),
        default="server",
        help="one Redis server, a Redis Cluster of 3, or a Sentinel group (REDIS_URL's forms)",
    )
    return parser.parse_args(argv)


def _client_counts(spec: str) -> list[int]:
    """``--clients``: the counts, or ``[0]`` (no ``X-Forwarded-For``) when unset."""
    return [int(n) for n in spec.split(",") if n.strip()] or [0]


def _redis(kind: str) -> Any:
    from quart_api.testing import RedisClusterServer, RedisSentinelGroup, RedisServer

    if kind == "cluster":
        return RedisClusterServer()
    if kind == "sentinel":
        return RedisSentinelGroup()
    return RedisServer()


def main(argv: list[str] | None = None) -> int:
    """Count and print bytecodes per request; 0 when every request answered 200."""
    args = parse_args(argv)
    from bench.run import _migrate
    from quart_api.testing import MemcachedServer, PostgresServer

    with _redis(args.redis) as redis, MemcachedServer() as memcached, PostgresServer() as postgres:
        database_url = postgres.create_database("bench")
        _migrate(database_url)
        seeded = asyncio.run(seed(database_url, args.users))
        _environment(database_url, redis.url)
        os.environ["MEMCACHED_SERVERS"] = memcached.address
        if args.clients:  # the proxy's X-Forwarded-For names the client
            os.environ["TRUSTED_PROXY_COUNT"] = "1"
        results = asyncio.run(_measure(args, seeded.token))
    base = results[args.against]
    print(
        f"bytecodes per request, {args.requests} requests per route, {args.concurrency} concurrent"
    )
    for name, counts in results.items():
        _report(name, counts, base, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
