"""``--profile``: where a route's server time goes, sampled by py-spy under load.

py-spy samples the running hypercorn worker from outside (no code change, no
instrumentation overhead in the measured process beyond the sampling itself) while
wrk loads the route. The stacks are written collapsed (``profile-<route>.txt``, one
``frame;frame;frame count`` line per stack: open it in https://www.speedscope.app or
feed it to ``inferno-flamegraph``), and summarized here as the frames with the
largest share of the samples, the question "what does a request spend its time on"
in a dozen lines. Idle samples (the loop waiting on sockets) are left out, so shares
are of busy time.

Profiled runs are never the measured ones: sampling slows the server.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["find_py_spy", "start_recording", "summarize"]


def find_py_spy() -> str | None:
    """py-spy from PATH or beside this interpreter (the venv's bin), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def start_recording(py_spy: str, pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` and its children (hypercorn's workers) for ``seconds`` into ``out``."""
    command = [
        py_spy, "record", "--pid", str(pid), "--subprocesses",
        "--duration", str(seconds), "--rate", "200", "--nonblocking",
        "--format", "raw", "-o", str(out),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


_FRAME = re.compile(r"^\S.* \(.+:\d+\)$")
#: Frames under which everything runs: they say nothing about a request's cost.
_BOOTSTRAP = ("multiprocessing/", "asyncio/runners.py", "asyncio/run.py", "<string>")


def _frame(text: str) -> tuple[str, str]:
    """``"function (/path/to/pkg/module.py:123)"`` as (``function (pkg/module.py)``, path)."""
    name, _, where = text.partition(" (")
    path = where.rsplit(":", 1)[0]
    short = "/".join(path.rsplit("/", 2)[-2:])
    return (f"{name} ({short})" if where else name), path


def summarize(raw: Path, top: int = 12) -> dict[str, Any]:
    """Busy samples, and the ``top`` frames by inclusive and by self share of them.

    ``inclusive`` leaves out the start-up frames every sample sits under; ``ours``
    is the inclusive list restricted to ``quart_api`` (what this project controls);
    ``self`` includes the event loop's own C code, booked to ``Runner.run``.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # Leading parts name the process and thread (whose command line may itself
        # contain ";"): frames are the parts shaped "function (path:line)".
        frames = [_frame(f) for f in stack.split(";") if _FRAME.match(f)]
        if not frames:
            continue
        total += count
        for frame, path in set(frames):
            if not any(marker in path for marker in _BOOTSTRAP):
                inclusive[frame] += count
            if path.startswith("quart_api/") or "/quart_api/" in path:
                ours[frame] += count
        own[frames[-1][0]] += count
    if total == 0:
        return {"samples": 0, "inclusive": [], "ours": [], "self": []}

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "share": round(n / total, 3)} for f, n in counter.most_common(top)]

    return {
        "samples": total,
        "inclusive": share(inclusive),
        "ours": share(ours),
        "self": share(own),
    }
