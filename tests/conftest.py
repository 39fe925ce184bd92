"""The suite's real servers, and helpers shared by every test package.

Redis, memcached, PostgreSQL and the Redis Cluster come from the plugin library users
load too (`quart_api.testing.fixtures`: session servers started on first use, healed
before each test, emptied per test through ``redis_url``, ``memcached_servers`` and
``pg_database``); this file adds what only this suite needs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quart_api.testing import MemcachedServer, serve_for_session

pytest_plugins = ["pytester", "quart_api.testing.fixtures"]


@pytest.fixture(scope="session")
def memcached_server2() -> Iterator[MemcachedServer]:
    """A second memcached, for tests that spread keys over several servers."""
    yield from serve_for_session(MemcachedServer())


def run_bounded(module_args: list[str], cwd: Path, timeout: float, what: str) -> tuple[int, str]:
    """``python -m <module_args>`` in ``cwd``: (exit code, output), bounded by ``timeout``.

    Past it the process gets SIGTERM first (the bench harnesses stop the servers they
    started on it), SIGKILL 30 s later, and the test fails showing the output's end.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", *module_args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"{what} did not finish within {timeout} s:\n{output[-4000:]}")
    return process.returncode, output
