"""Ending a failed start-up with one line on stderr and an exit status a supervisor reads.

hypercorn serves from worker processes unless ``workers = 0``, and ``hypercorn
"quart_api.app:create_app()"`` builds the app in each worker. A worker that fails
to start exits 1, but hypercorn's supervisor process (checked on 0.18) then exits
0: ``hypercorn.run.run`` records the failed worker's status, removes it from its
list, and finally overwrites that status with the result of joining the now-empty
list (pgjones/hypercorn#269). systemd, Docker and Kubernetes then see a clean stop
of a server that never served. Nothing of ours runs in the supervisor, so the
failing worker ends it itself, with a signal it does not handle (``SIGUSR1``; its
handlers catch INT, TERM and HUP only): the documented command then exits non-zero
whatever the worker count.
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
import signal
import sys
from typing import Final, NoReturn

__all__ = ["HYPERCORN_LOSES_WORKER_STATUS", "fail_start_up", "hypercorn_supervisor"]

#: hypercorn releases whose supervisor exits 0 after a worker failed (below 0.19).
HYPERCORN_LOSES_WORKER_STATUS: Final = (0, 19)


def fail_start_up(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with status 1.

    Under a hypercorn supervisor that would report success instead, stop the
    supervisor first (see the module docstring).
    """
    print(f"quart-api: {message}", file=sys.stderr, flush=True)
    supervisor = hypercorn_supervisor()
    if supervisor is not None:
        os.kill(supervisor, signal.SIGUSR1)
    raise SystemExit(1)


def hypercorn_supervisor() -> int | None:
    """The pid of the hypercorn process that started this worker, when that process
    would exit 0 after our failure; None otherwise (not a hypercorn worker, a
    hypercorn that reports worker failures, or a parent already gone)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None or os.getppid() != parent.pid:
        return None
    if "hypercorn.run" not in sys.modules or not hasattr(signal, "SIGUSR1"):
        return None
    try:
        version = importlib.metadata.version("hypercorn")
    except importlib.metadata.PackageNotFoundError:
        return None
    if _release(version) >= HYPERCORN_LOSES_WORKER_STATUS:
        return None
    return parent.pid


def _release(version: str) -> tuple[int, ...]:
    """``"0.18.0"`` -> ``(0, 18, 0)``; stops at the first part that is not a number."""
    numbers = []
    for part in version.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)
