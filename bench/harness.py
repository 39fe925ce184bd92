"""What ``make bench`` and ``make chaos`` both do before they start anything.

Both drive real servers with wrk from this process: they need wrk, a SIGTERM that
unwinds through every ``finally`` (so no server is left running), the load pinned
off the server's core, and an open-files limit that 1,000 connections fit in.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from types import FrameType

from bench.loadgen import WrkError, find_wrk
from bench.serve import Cores, pin_self, plan_cores, raise_open_files

__all__ = ["Harness", "Terminated", "start_harness"]


class Terminated(Exception):
    """SIGTERM arrived: unwind through every `finally` so nothing is left running."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


@dataclass(frozen=True, slots=True)
class Harness:
    wrk: str
    cores: Cores
    open_files: int


def start_harness(name: str, workers: int) -> Harness | None:
    """Set this process up to drive load; None (after saying why) when wrk is missing.

    From here on this process, and every child it starts (the stores, wrk), keeps to
    the load cores; SIGTERM raises :class:`Terminated`.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        wrk = find_wrk()
    except WrkError as missing:
        print(f"{name}: {missing}", file=sys.stderr)
        return None
    cores = plan_cores(workers)
    pin_self(cores)
    return Harness(wrk, cores, raise_open_files())
