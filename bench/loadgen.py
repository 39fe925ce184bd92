"""wrk, the load generator: one bounded run, its JSON summary parsed.

wrk (C, epoll, one thread per core) is used instead of a Python client because a
Python load generator on the second core would be slower than the server it
measures. ``bench/wrk/bench.lua`` adds the headers (bearer token, user header),
varies URLs when asked, counts responses per status and prints one ``BENCH_JSON``
line from ``done()``, so nothing here scrapes wrk's human-readable report.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LUA_SCRIPT", "WrkError", "WrkResult", "find_wrk", "run_wrk", "wrk_version"]

LUA_SCRIPT = Path(__file__).parent / "wrk" / "bench.lua"
_MARKER = "BENCH_JSON "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no summary."""


def find_wrk() -> str:
    """Path of the wrk binary, or a `WrkError` saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(
            "wrk not found: install the Debian package 'wrk' (apt-get install wrk), or run "
            "`bash scripts/ensure-servers.sh wrk` (`make bench` does it for you)."
        )
    return path


def wrk_version(wrk: str) -> str:
    """wrk's first line of ``--version`` (it exits 1 after printing it)."""
    done = subprocess.run(
        [wrk, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return (
        (done.stdout or done.stderr).splitlines()[0].strip()
        if (done.stdout or done.stderr)
        else "?"
    )


@dataclass(slots=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms), errors and statuses."""

    requests: int
    duration_s: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(self.errors[k] for k in ("connect", "read", "write", "timeout"))

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not code.startswith("2"))

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code.startswith("5"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "latency_ms": self.latency_ms,
            "errors": self.errors,
            "socket_errors": self.socket_errors,
            "non_2xx": self.non_2xx,
            "statuses": self.statuses,
        }


def parse_summary(output: str) -> WrkResult:
    """The ``BENCH_JSON`` line of wrk's output as a `WrkResult`."""
    for line in output.splitlines():
        if line.startswith(_MARKER):
            data = json.loads(line[len(_MARKER) :])
            break
    else:
        raise WrkError(f"wrk printed no {_MARKER.strip()} line:\n{output[-2000:]}")
    latency = {key: round(value / 1000.0, 3) for key, value in data["latency_us"].items()}
    statuses = {str(code): int(n) for code, n in sorted(data["statuses"].items())}
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        latency_ms=latency,
        errors={key: int(n) for key, n in data["errors"].items()},
        statuses=statuses,
    )


_DURATION = re.compile(r"^\d+$")


def run_wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    threads: int = 1,
    timeout: int = 5,
    headers: Mapping[str, str] | None = None,
    path_template: str | None = None,
    path_range: int = 0,
    wrk: str | None = None,
) -> WrkResult:
    """Load ``url`` for ``duration`` seconds with ``connections`` open connections.

    ``timeout`` is wrk's per-request socket timeout (a response slower than that is
    counted as a timeout error). The process itself is bounded by ``duration`` plus a
    margin, so a stuck wrk cannot hang the benchmark.
    """
    if not _DURATION.match(str(duration)) or duration < 1:
        raise ValueError(f"wrk takes whole seconds >= 1, got {duration!r}")
    command = [
        wrk or find_wrk(),
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{duration}s",
        f"--timeout={timeout}s",
        "--latency",
        "-s", str(LUA_SCRIPT),
        url,
    ]  # fmt: skip
    env = {
        "PATH": "/usr/bin:/bin",
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
        "BENCH_PATH_TEMPLATE": path_template or "",
        "BENCH_PATH_RANGE": str(path_range),
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
    return parse_summary(done.stdout)
