"""The harness's handle on a relay process (``relay.py``): start, delay, count, cut, stop."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.cluster.relay import RelaySpec

__all__ = ["RelayError", "RelayProcess"]


class RelayError(RuntimeError):
    """The relay process failed to start or to answer."""


class RelayProcess:
    """A relay child process: start, change the delay, read counters and CPU, cut, stop.

    ``cores``: CPUs the child is pinned to (the load generator's), or None.
    """

    def __init__(
        self, name: str, specs: Iterable[RelaySpec], *, cores: frozenset[int] | None = None
    ) -> None:
        self.name = name
        self.specs = list(specs)
        self.cores = cores
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 15.0) -> RelayProcess:
        cores = self.cores

        def pin() -> None:
            if cores is not None:
                os.sched_setaffinity(0, cores)

        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.cluster.relay",
                json.dumps([s.as_list() for s in self.specs]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # tracebacks go to the harness's stderr
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
            preexec_fn=pin,
        )
        reply = self._read(timeout)
        if not reply.get("ready"):
            self.stop()
            raise RelayError(f"relay {self.name} did not start: {reply}")
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RelayError(f"relay {self.name} is not running")
        return self.process.pid

    def _read(self, timeout: float) -> dict[str, Any]:
        process = self.process
        if process is None or process.stdout is None:
            raise RelayError(f"relay {self.name} is not running")
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if selector.select(max(0.0, deadline - time.monotonic())):
                    line = process.stdout.readline()
                    if not line:
                        break
                    reply: dict[str, Any] = json.loads(line)
                    return reply
        finally:
            selector.close()
        raise RelayError(
            f"relay {self.name} did not answer within {timeout} s (exit {process.poll()})"
        )

    def call(self, op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send one command, return its reply."""
        process = self.process
        if process is None or process.stdin is None or process.poll() is not None:
            raise RelayError(f"relay {self.name} is not running")
        process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        process.stdin.flush()
        reply = self._read(timeout)
        if "error" in reply:
            raise RelayError(f"relay {self.name}: {reply['error']}")
        return reply

    def set_delay(self, one_way_ms: float, jitter_ms: float = 0.0) -> None:
        self.call("delay", one_way_ms=one_way_ms, jitter_ms=jitter_ms)

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def cut(self, name: str) -> int:
        """Reset every connection of relay ``name`` (and ``name/...``), losing data in flight."""
        reset: int = self.call("cut", name=name)["reset"]
        return reset

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert process.stdin is not None
                process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                process.stdin.flush()
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(3)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> RelayProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
