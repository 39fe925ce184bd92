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
from dataclasses import dataclass
from pathlib import Path

from quart_api.testing.hypercorn import BACKLOG, ServeError, http_get
from quart_api.testing.hypercorn import HypercornApp as TestingHypercornApp

__all__ = [
    "BACKLOG",
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


@dataclass
class HypercornApp(TestingHypercornApp):
    """`quart_api.testing.HypercornApp` run from the repository root, where the bench apps are."""

    cwd: Path | None = ROOT
