"""Hypercorn processes for the benchmark apps, and the host facts that bound them.

Each app is its own ``hypercorn`` process group on a free loopback port, started in
a new session so that stopping it (SIGTERM to the group we created, then SIGKILL)
takes its workers down with it and nothing else. The listen backlog is raised so a
burst of 1,000 connects queues in the kernel instead of being refused: a socket
error in the high-concurrency run then means the service failed, not the harness.

Cores: with two or more CPUs, the server runs on core 0 and everything else (the
harness, the stores it starts, wrk) on the others, so the load generator and the
stores do not steal the server's core and ratios between routes stay stable. Done
with ``sched_setaffinity`` (what ``taskset -c`` does), so no binary is needed; where
the call is missing or there is one CPU, nothing is pinned and the result says so.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ROOT",
    "Cores",
    "HypercornApp",
    "ServeError",
    "http_get",
    "plan_cores",
    "raise_open_files",
    "somaxconn",
]

ROOT = Path(__file__).resolve().parent.parent
BACKLOG = 4096


class ServeError(RuntimeError):
    """An app did not start or answer."""


@dataclass(frozen=True, slots=True)
class Cores:
    """Which CPUs the server and the rest run on (``None``: not pinned)."""

    server: frozenset[int] | None
    load: frozenset[int] | None
    note: str

    def as_dict(self) -> dict[str, object]:
        return {
            "server": sorted(self.server) if self.server is not None else None,
            "load_and_stores": sorted(self.load) if self.load is not None else None,
            "note": self.note,
        }


def plan_cores(workers: int) -> Cores:
    """Server on core 0 (one worker) and the rest elsewhere, where that is possible."""
    if not hasattr(os, "sched_setaffinity"):
        return Cores(None, None, "not pinned: sched_setaffinity is not available here")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Cores(None, None, f"not pinned: only {len(cpus)} CPU available")
    load = frozenset(cpus[1:])
    if workers > 1:
        # Several workers need more than one core; the load still keeps to its own.
        return Cores(
            None, load, f"{workers} workers float over all cores; wrk and stores on {sorted(load)}"
        )
    return Cores(
        frozenset(cpus[:1]), load, f"server on core {cpus[0]}, wrk and stores on {sorted(load)}"
    )


def pin_self(cores: Cores) -> None:
    """Pin this process (and so every child it starts from now on) to the load cores."""
    if cores.load is not None:
        os.sched_setaffinity(0, cores.load)


def raise_open_files(wanted: int = 65_536) -> int:
    """Raise the soft open-files limit towards ``wanted`` (1,000 connections need it).

    Children inherit it: wrk's and hypercorn's sockets both count. Returns the new
    soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def somaxconn() -> int | None:
    """The kernel's cap on any listen backlog (``net.core.somaxconn``)."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text().strip())
    except (OSError, ValueError):
        return None


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """One GET, as ``(status, body)``; HTTP errors are answers too, not exceptions."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class HypercornApp:
    """One app factory served by ``hypercorn`` (``workers`` workers on ``worker_class``)."""

    name: str
    target: str  # "module:factory()"
    port: int
    env: Mapping[str, str]
    log_path: Path
    workers: int = 1
    worker_class: str = "asyncio"  # hypercorn.toml's choice; see there
    cores: frozenset[int] | None = None
    ready_path: str = "/ok"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The hypercorn master's pid (its workers are its children)."""
        if self.process is None:
            raise ServeError(f"{self.name} is not started")
        return self.process.pid

    def start(self) -> None:
        """Spawn the process; `wait_ready` tells when it answers."""
        command = [
            sys.executable, "-m", "hypercorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", self.worker_class,
            "--backlog", str(BACKLOG),
            "--keep-alive", "30",
            "--graceful-timeout", "2",
            "--error-logfile", "-",
            self.target,
        ]  # fmt: skip
        cores = self.cores

        def pin() -> None:  # runs in the child between fork and exec
            if cores is not None:
                os.sched_setaffinity(0, cores)

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pin,
            )

    def wait_ready(self, deadline: float) -> None:
        """Block until ``ready_path`` answers 200, the process dies, or ``deadline``."""
        url = self.base_url + self.ready_path
        while True:
            if self.process is None or self.process.poll() is not None:
                raise ServeError(
                    f"{self.name} exited on start; log {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http_get(url, timeout=2)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise ServeError(
                    f"{self.name} did not answer {url}; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM our process group, then SIGKILL it if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        # Workers may outlive their parent for a moment: the group id is still ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2)
