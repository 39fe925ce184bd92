"""pytest fixtures that start real Redis, memcached and PostgreSQL for your own tests.

Load the plugin in your ``conftest.py``::

    pytest_plugins = ["quart_api.testing.fixtures"]

Session-scoped (each starts the first time a test asks for it, on a free loopback
port, and stops when the session ends):

- ``redis_server``: a `RedisServer`; ``redis_cluster``: a 3-node `RedisClusterServer`;
- ``memcached_server``: a `MemcachedServer`;
- ``postgres_server``: a `PostgresServer` (trust auth as ``postgres``, no fsync).

Function-scoped, emptied for each test:

- ``redis_url``: ``redis://127.0.0.1:<port>/0`` of ``redis_server``, after FLUSHALL;
- ``memcached_servers``: ``"127.0.0.1:<port>"`` of ``memcached_server``, after flush_all;
- ``pg_database``: the asyncpg URL of a new empty database, dropped afterwards.

A test may stop, pause or restart a session server (fault tests do); the next test
gets it running again (`quart_api.testing.serve_for_session` does the same for
your own session fixtures). A missing server binary fails the fixture with a message
naming the Debian package to install.

The fixtures are sync on purpose: they must not depend on which event loop runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from quart_api.testing.memcached import MemcachedServer
from quart_api.testing.postgres import PostgresServer
from quart_api.testing.redis import RedisClusterServer, RedisServer
from quart_api.testing.session import heal_session_servers, serve_for_session

__all__ = [
    "memcached_server",
    "memcached_servers",
    "pg_database",
    "postgres_server",
    "redis_cluster",
    "redis_server",
    "redis_url",
]


@pytest.fixture(autouse=True)
def _heal_session_servers() -> None:
    """Resume or restart any session server that an earlier test left paused or stopped."""
    heal_session_servers()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis (standalone, no persistence)."""
    yield from serve_for_session(RedisServer())


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """The session's Redis Cluster: 3 masters, no replicas, cluster_state:ok."""
    yield from serve_for_session(RedisClusterServer())


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    """The session's memcached."""
    yield from serve_for_session(MemcachedServer())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL (trust auth as ``postgres``, no fsync)."""
    yield from serve_for_session(PostgresServer())


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``REDIS_URL`` of the session's Redis, emptied (FLUSHALL) for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def memcached_servers(memcached_server: MemcachedServer) -> str:
    """``MEMCACHED_SERVERS`` of the session's memcached ("host:port"), flushed for this test."""
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
