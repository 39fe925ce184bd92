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


def _frame(text: str) -> str:
    """``"function (path/to/module.py:123)"`` shortened to ``function (module.py)``."""
    name, _, where = text.partition(" (")
    module = where.rsplit(":", 1)[0].rsplit("/", 2)
    return f"{name} ({'/'.join(module[-2:])})" if where else name


def summarize(raw: Path, top: int = 12) -> dict[str, Any]:
    """Busy samples, and the ``top`` frames by inclusive share and by self share.

    Frames present in nearly every sample (the event loop, hypercorn's task runner)
    say nothing and are left out of the inclusive list.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # [0] is the process/thread
        if not frames:
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if total == 0:
        return {"samples": 0, "inclusive": [], "self": []}

    def share(counter: Counter[str], limit: float) -> list[dict[str, Any]]:
        ranked = [(f, n / total) for f, n in counter.most_common() if n / total < limit]
        return [{"frame": f, "share": round(x, 3)} for f, x in ranked[:top]]

    return {"samples": total, "inclusive": share(inclusive, 0.9), "self": share(own, 1.01)}
