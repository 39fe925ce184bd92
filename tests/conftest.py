"""Real servers for the whole session, and clean state for each test.

Each server starts the first time a test asks for it and stops at the end of the
session. Fault tests stop, restart, pause and resume these shared servers; an autouse
fixture brings back whatever a test left down before the next test runs.

Fixtures are sync on purpose: they must not depend on which event loop is running.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.servers import (
    MemcachedServer,
    PostgresServer,
    RedisClusterServer,
    RedisServer,
    Server,
)

# Servers the session has started, in start order; healed before every test.
_session_servers: list[Server | RedisClusterServer] = []

S = TypeVar("S", bound=Server | RedisClusterServer)


def _serve(server: S) -> Iterator[S]:
    """Start `server` for the session, register it for healing, close it at the end."""
    with server:
        _session_servers.append(server)
        try:
            yield server
        finally:
            _session_servers.remove(server)


@pytest.fixture(autouse=True)
def _heal_session_servers() -> None:
    """Resume or restart any session server that an earlier test left paused or stopped."""
    for server in _session_servers:
        server.ensure_running()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis (standalone, no persistence)."""
    yield from _serve(RedisServer())


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    """The session's memcached."""
    yield from _serve(MemcachedServer())


@pytest.fixture(scope="session")
def memcached_server2() -> Iterator[MemcachedServer]:
    """A second memcached, for tests that spread keys over several servers."""
    yield from _serve(MemcachedServer())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL (trust auth as `postgres`, no fsync)."""
    yield from _serve(PostgresServer())


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """The session's Redis Cluster: 3 masters, no replicas, cluster_state:ok."""
    yield from _serve(RedisClusterServer())


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis, emptied (FLUSHALL) for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def memcached_servers(memcached_server: MemcachedServer) -> str:
    """`MEMCACHED_SERVERS` value ("host:port") of the session's memcached, flushed for this test."""
    memcached_server.flush()
    return memcached_server.address


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL (asyncpg) of a new empty database for this test, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.ensure_running()  # the test may have paused or stopped it
    postgres_server.drop_database(name)


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
