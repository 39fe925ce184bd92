"""A delaying TCP relay: the network between the app hosts and a store, on loopback.

This kernel has no ``netem`` qdisc, so latency is added in user space: each relay
listens on a store's public address and forwards every chunk it reads to the
store's real address (and every reply back) after the configured one-way delay,
plus an optional jitter. Order is kept per direction (a chunk is never delivered
before the one read before it), so pipelined replies arrive intact and in order.
The TCP handshake itself is not delayed (the relay accepts at once and holds what
the client sends until the upstream connection is up): set-up is rare, data is not.

One relay process serves several listeners (one store group: the nodes of a Redis
Cluster, memcached, ...) on one asyncio loop, pinned to the load generator's core.
Its event loop uses ``select()``, whose timeout has microsecond resolution, with
the thread's timer slack lowered to 1 us: ``epoll`` and ``poll`` round every wait
up to a whole millisecond, which would turn a 0.25 ms delay into 1 ms whenever the
loop is idle. ``select()`` only takes descriptors below 1024, so the process keeps
its open-files limit at 1024 and a store group that needs more connections gets
another process (``accept`` then fails visibly, never ``select``).

Driven by ``relay_process.RelayProcess`` over the child's stdin/stdout, one JSON line each:
``{"op": "delay", "one_way_ms": .., "jitter_ms": ..}``, ``{"op": "stats"}``
(chunks, bytes and connections per relay and direction: a pipeline written at once
is one chunk, so client-to-server chunks count round trips), ``{"op": "cut",
"name": ..}`` (a host dies: every connection of that relay is reset and what was in
flight is lost) and ``{"op": "quit"}``.

    python -m bench.cluster.relay '[["redis-1", "127.0.0.21", 7000, "127.0.1.21", 7000]]'
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import os
import random
import resource
import selectors
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RelaySpec", "main"]

_PR_SET_TIMERSLACK = 29
_SELECT_FD_LIMIT = 1024
#: Bounds on the last part of a wait that is spun rather than slept (_PreciseSelector).
_SPIN_MIN_S = 0.0002
_SPIN_MAX_S = 0.0005


@dataclass(frozen=True, slots=True)
class RelaySpec:
    """One listener: clients connect to ``listen``, the relay connects to ``target``."""

    name: str
    listen_host: str
    listen_port: int
    target_host: str
    target_port: int

    def as_list(self) -> list[Any]:
        return [self.name, self.listen_host, self.listen_port, self.target_host, self.target_port]


# -- inside the relay process ---------------------------------------------------------


class _Settings:
    """The delay every relay of the process applies now (changed live by ``delay``)."""

    one_way_s = 0.0
    jitter_s = 0.0


class _Counters:
    """Chunks and bytes relayed one way, and the delay they really got (read to write)."""

    __slots__ = ("bytes", "chunks", "delayed", "delayed_s")

    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0
        self.delayed = 0  # chunks that were queued (not written at once)
        self.delayed_s = 0.0  # their time from read to write, summed


#: Queued in place of a chunk: close the sink once everything before it is delivered.
_CLOSE = b""


class _Direction:
    """Chunks read from one side, written to the other after the delay, in order.

    Each chunk gets a delivery time ``now + delay (+ jitter)``, never earlier than the
    chunk before it, and a timer; whichever timer fires writes the OLDEST queued
    chunk, so timers that fire in another order (equal deadlines) still deliver in
    order. ``_CLOSE`` (empty bytes: never read from a socket) closes the sink.
    """

    __slots__ = ("counters", "last", "loop", "queue", "read_at", "sink")

    def __init__(self, loop: asyncio.AbstractEventLoop, counters: _Counters) -> None:
        self.loop = loop
        self.counters = counters
        self.sink: asyncio.Transport | None = None
        self.queue: collections.deque[bytes] = collections.deque()
        self.read_at: collections.deque[float] = collections.deque()  # of each queued chunk
        self.last = 0.0

    def push(self, data: bytes) -> None:
        if data:
            self.counters.chunks += 1
            self.counters.bytes += len(data)
        delay = _Settings.one_way_s
        if _Settings.jitter_s:
            delay = max(0.0, delay + random.uniform(-_Settings.jitter_s, _Settings.jitter_s))
        if delay <= 0.0 and not self.queue:
            self._write(data)
            return
        now = self.loop.time()
        when = max(now + delay, self.last)
        self.last = when
        self.queue.append(data)
        self.read_at.append(now)
        self.loop.call_at(when, self._deliver)

    def _deliver(self) -> None:
        if self.queue:  # empty after drop(): the timer of a lost chunk
            counters = self.counters
            counters.delayed += 1
            counters.delayed_s += self.loop.time() - self.read_at.popleft()
            self._write(self.queue.popleft())

    def _write(self, data: bytes) -> None:
        sink = self.sink
        if sink is None or sink.is_closing():
            return
        if data:
            sink.write(data)
        else:
            sink.close()

    def drop(self) -> None:
        """Lose whatever is in flight (a host died)."""
        self.queue.clear()
        self.read_at.clear()


class _Side(asyncio.Protocol):
    """One socket of a relayed connection; what it reads goes out through ``out``."""

    def __init__(self, conn: _Connection, out: _Direction, *, client: bool) -> None:
        self.conn = conn
        self.out = out
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.client:
            # Nothing is read until the upstream connection is up (no reader is
            # registered yet, so nothing can arrive before this pause).
            transport.pause_reading()
            task = asyncio.get_running_loop().create_task(self.conn.open_upstream())
            _background.add(task)
            task.add_done_callback(_background.discard)

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        return False  # close this side; connection_lost closes the other after the delay

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.side_lost(self)

    def pause_writing(self) -> None:
        self.conn.peer_of(self).pause_reading()

    def resume_writing(self) -> None:
        self.conn.peer_of(self).resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class _Connection:
    """A client socket, its upstream socket, and the two delayed directions between them."""

    def __init__(self, relay: _Relay) -> None:
        loop = asyncio.get_running_loop()
        self.relay = relay
        self.up = _Direction(loop, relay.up)  # client -> server
        self.down = _Direction(loop, relay.down)  # server -> client
        self.client = _Side(self, self.up, client=True)
        self.server = _Side(self, self.down, client=False)
        self.closed = False

    def peer_of(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client

    async def open_upstream(self) -> None:
        client = self.client.transport
        assert client is not None
        self.down.sink = client
        spec = self.relay.spec
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: self.server, spec.target_host, spec.target_port
            )
        except OSError:
            self.relay.refused += 1
            self.abort()
            return
        if self.closed:
            self.abort()
            return
        self.up.sink = self.server.transport
        client.resume_reading()

    def side_lost(self, side: _Side) -> None:
        """One side closed: close the other once what was on its way to it is delivered."""
        if self.closed:
            return
        self.closed = True
        self.relay.connections.discard(self)
        towards = self.up if side is self.client else self.down
        towards.push(_CLOSE)

    def abort(self) -> None:
        """Reset both sockets and lose what is in flight."""
        self.closed = True
        self.relay.connections.discard(self)
        self.up.drop()
        self.down.drop()
        for side in (self.client, self.server):
            if side.transport is not None:
                side.transport.abort()


class _Relay:
    """One listener and its counters."""

    def __init__(self, spec: RelaySpec) -> None:
        self.spec = spec
        self.up = _Counters()
        self.down = _Counters()
        self.accepted = 0
        self.refused = 0
        self.connections: set[_Connection] = set()
        self.server: asyncio.Server | None = None

    def accept(self) -> _Side:
        conn = _Connection(self)
        self.connections.add(conn)
        self.accepted += 1
        return conn.client

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "open": len(self.connections),
            "refused_upstream": self.refused,
            "up_chunks": self.up.chunks,
            "up_bytes": self.up.bytes,
            "down_chunks": self.down.chunks,
            "down_bytes": self.down.bytes,
            "delayed_chunks": self.up.delayed + self.down.delayed,
            "delayed_s": self.up.delayed_s + self.down.delayed_s,
        }

    def cut(self) -> int:
        conns = list(self.connections)
        for conn in conns:
            conn.abort()
        return len(conns)


_background: set[asyncio.Task[None]] = set()


class _PreciseSelector(selectors.SelectSelector):
    """``select()`` that sleeps through most of a wait and spins (yielding) through the rest.

    Waking a sleeping process takes this VM from tens to hundreds of microseconds
    (more on a busy host), more than the smallest delays measured. So a wait sleeps
    until ``spin`` before its end and then polls, with ``sched_yield()`` between polls,
    which lands within a few microseconds of the timer and costs nothing another
    process on the core wanted (whenever one is runnable, the yield hands it the
    core). ``spin`` follows how much the sleeps overshoot (twice a moving average,
    0.2-0.5 ms). Timers never fire early, so a chunk is never delivered before its
    delay; under load the loop rarely waits at all.
    """

    def __init__(self) -> None:
        super().__init__()
        self.oversleep = 0.0  # moving average, seconds

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0.0:
            return super().select(timeout)
        spin = min(_SPIN_MAX_S, max(_SPIN_MIN_S, 2.0 * self.oversleep + 0.0001))
        deadline = time.monotonic() + timeout
        if timeout > spin:
            ready = super().select(timeout - spin)
            if ready:
                return ready
            late = time.monotonic() - (deadline - spin)
            self.oversleep += (late - self.oversleep) * 0.1
        while True:
            ready = super().select(0)
            if ready or time.monotonic() >= deadline:
                return ready
            os.sched_yield()


def _lower_timer_slack() -> None:
    """Wake-ups within ~1 us of the timer instead of the default 50 us slack."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)


async def _serve(specs: list[RelaySpec]) -> None:
    loop = asyncio.get_running_loop()
    relays = {spec.name: _Relay(spec) for spec in specs}
    for relay in relays.values():
        relay.server = await loop.create_server(
            relay.accept,
            relay.spec.listen_host,
            relay.spec.listen_port,
            reuse_address=True,
            backlog=1024,
        )
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(reply: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    answer({"ready": True, "pid": os.getpid()})
    while line := await reader.readline():
        try:
            command = json.loads(line)
            op = command["op"]
        except (ValueError, KeyError, TypeError):
            answer({"error": f"bad command {line!r}"})
            continue
        if op == "delay":
            _Settings.one_way_s = float(command["one_way_ms"]) / 1000.0
            _Settings.jitter_s = float(command.get("jitter_ms", 0.0)) / 1000.0
            answer({"ok": True})
        elif op == "stats":
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            answer(
                {
                    "relays": {name: relay.stats() for name, relay in relays.items()},
                    "cpu_s": cpu.ru_utime + cpu.ru_stime,
                    "one_way_ms": _Settings.one_way_s * 1000.0,
                    "jitter_ms": _Settings.jitter_s * 1000.0,
                }
            )
        elif op == "cut":
            names = [
                n for n in relays if n == command["name"] or n.startswith(command["name"] + "/")
            ]
            answer({"ok": True, "reset": sum(relays[n].cut() for n in names), "relays": names})
        elif op == "quit":
            answer({"ok": True})
            break
        else:
            answer({"error": f"unknown op {op!r}"})
    for relay in relays.values():
        if relay.server is not None:
            relay.server.close()
        relay.cut()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the relays given as a JSON list of ``[name, host, port, target_host, target_port]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    specs = [RelaySpec(*item) for item in json.loads(args[0])]
    _lower_timer_slack()
    # select() cannot watch a descriptor >= 1024: fail accept() (visible) before that.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(_SELECT_FD_LIMIT, hard), hard))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (quit, then SIGTERM)
    loop = asyncio.SelectorEventLoop(_PreciseSelector())
    try:
        loop.run_until_complete(_serve(specs))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
