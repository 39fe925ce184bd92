"""Load on several app hosts: wrk for throughput, a small Python client for correctness.

- :func:`run_wrk_hosts`: one wrk, one thread per app host (``wrk/hosts.lua`` points
  each thread at a host), optionally naming N distinct clients in
  ``X-Forwarded-For``; its summary is ``bench/wrk/bench.lua``'s, plus the 200s that
  carried no ``RateLimit`` header (a limit that failed open).
- :func:`drive`: asyncio HTTP/1.1 keep-alive clients, one connection each, on the
  hosts in turn, each with its own ``X-Forwarded-For`` identity, recording every
  response (time, client, status, whether a ``RateLimit`` header came with it), for
  the exactness and failover scenarios, where who got what and when matters more
  than speed. Bounded in requests and in time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import Terminated
from bench.loadgen import LUA_SCRIPT, WrkError, WrkResult, parse_summary

__all__ = ["Client", "Sample", "drive", "run_wrk_hosts"]

HOSTS_LUA = Path(__file__).parent / "wrk" / "hosts.lua"
_MARKER = "CLUSTER_JSON "


def run_wrk_hosts(
    wrk: str,
    hosts: Sequence[tuple[str, int]],
    path: str,
    *,
    duration: int,
    connections: int,
    headers: Mapping[str, str] | None = None,
    xff_range: int = 0,
    xff_base: int = 0,
    timeout: int = 5,
) -> tuple[WrkResult, int]:
    """Load ``path`` on every host for ``duration`` s: (summary, unchecked 200s)."""
    host, port = hosts[0]
    threads = len(hosts)
    command = [
        wrk, f"-t{threads}", f"-c{max(connections, threads)}", f"-d{duration}s",
        f"--timeout={timeout}s", "--latency", "-s", str(HOSTS_LUA),
        f"http://{host}:{port}{path}",
    ]  # fmt: skip
    env = {
        "PATH": "/usr/bin:/bin",
        "BENCH_LUA": str(LUA_SCRIPT),
        "BENCH_HOSTS": ",".join(f"{h}:{p}" for h, p in hosts),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
        "BENCH_XFF_RANGE": str(xff_range),
        "BENCH_XFF_BASE": str(xff_base),
    }
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=duration + timeout + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {exc.timeout} s: {command}") from None
    if done.returncode != 0:
        raise WrkError(
            f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout[-2000:]}"
        )
    unchecked = 0
    for line in done.stdout.splitlines():
        if line.startswith(_MARKER):
            unchecked = int(json.loads(line[len(_MARKER) :])["unchecked_200"])
    return parse_summary(done.stdout), unchecked


@dataclass(frozen=True, slots=True)
class Client:
    """One connection: the host it talks to and the client it claims to be."""

    host: tuple[str, int]
    forwarded_for: str
    path: str
    pace_s: float = 0.0  # at least this long between two requests (0: back to back)


@dataclass(slots=True)
class Sample:
    """One answer: seconds since the start (when it arrived), client index, status.

    ``status`` 0 means the connection failed (reset, refused, timed out).
    ``checked``: a ``RateLimit`` header came with it (the limit was really checked).
    """

    t: float
    client: int
    status: int
    checked: bool


@dataclass(slots=True)
class _Budget:
    left: int
    until: float
    samples: list[Sample] = field(default_factory=list)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    checked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "ratelimit":
            checked = True
    if length:
        await reader.readexactly(length)
    return status, checked


async def _run_client(
    index: int, client: Client, budget: _Budget, started: float, timeout: float
) -> None:
    host, port = client.host
    request = (
        f"GET {client.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"X-Forwarded-For: {client.forwarded_for}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while budget.left > 0 and loop.time() < budget.until:
        budget.left -= 1
        sent = loop.time()
        try:
            async with asyncio.timeout(timeout):
                if conn is None:
                    conn = await asyncio.open_connection(host, port)
                status, checked = await _exchange(*conn, request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            status, checked = 0, False
            if conn is not None:
                conn[1].close()
            conn = None
        budget.samples.append(Sample(loop.time() - started, index, status, checked))
        if client.pace_s:
            await asyncio.sleep(max(0.0, client.pace_s - (loop.time() - sent)))
    if conn is not None:
        conn[1].close()


async def _drive(
    clients: Sequence[Client], max_requests: int, seconds: float, timeout: float, started: float
) -> list[Sample]:
    budget = _Budget(max_requests, started + seconds)
    await asyncio.gather(
        *(_run_client(i, c, budget, started, timeout) for i, c in enumerate(clients))
    )
    return budget.samples


def drive(
    clients: Sequence[Client],
    *,
    max_requests: int,
    seconds: float,
    timeout: float = 5.0,
    during: Any = None,
) -> tuple[list[Sample], float]:
    """Run every client until ``max_requests`` are sent or ``seconds`` pass.

    ``during``: an optional ``async`` callable (given the loop's start time) run
    alongside, e.g. the fault of the failover scenario. Returns the samples and the
    wall-clock start (``time.time()``) that their ``t`` counts from.

    SIGTERM cancels the run and raises :class:`Terminated` here, as it would anywhere
    else in the harness: inside the event loop the harness's handler would raise into
    a callback, where asyncio logs the exception and carries on.
    """
    terminated = False

    async def main() -> tuple[list[Sample], float]:
        nonlocal terminated
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            if task is not None:
                task.cancel()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        wall = time.time()
        started = loop.time()
        load = asyncio.ensure_future(_drive(clients, max_requests, seconds, timeout, started))
        try:
            if during is not None:
                await during(started)
            return await load, wall
        finally:
            load.cancel()

    previous = signal.getsignal(signal.SIGTERM)
    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if terminated:
            raise Terminated("signal SIGTERM") from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
