"""The per-process counters the benchmarks divide by the requests served."""

from __future__ import annotations

import subprocess
import sys

from bench.stats import server_sleeps

_SLEEPER = """
import sys, time
for _ in range(40):
    time.sleep(0.002)
print("slept", flush=True)
sys.stdin.readline()
"""


def test_server_sleeps_counts_each_wait_of_a_process_tree() -> None:
    # A parent whose child sleeps 40 times: the tree's count grows by at least that.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_SLEEPER!r}])",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "slept"
        assert server_sleeps(parent.pid) >= 40
    finally:
        parent.communicate("\n", timeout=10)
