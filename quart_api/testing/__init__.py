"""Real servers for tests: Redis (standalone, Cluster, Sentinel), memcached, PostgreSQL.

Each runs as a child process on a free loopback port, in a temp dir of its own, and
answers before ``start()`` returns::

    from quart_api.testing import MemcachedServer, RedisServer

    with RedisServer() as redis_server, MemcachedServer() as memcached_server:
        app.config.update(REDIS_URL=redis_server.url,
                          MEMCACHED_SERVERS=memcached_server.address)

For pytest, ``pytest_plugins = ["quart_api.testing.fixtures"]`` gives the same servers
as fixtures (see `quart_api.testing.fixtures`). This package needs only the standard
library and redis-py (a dependency of the guards), plus pytest for the fixtures, and
never imports the service. The binaries come from Debian's ``redis-server``,
``memcached`` and ``postgresql`` packages.
"""

from quart_api.testing._process import HOST, Server, ServerError, find_binary, free_port
from quart_api.testing.hypercorn import HypercornApp, ServeError, http_get
from quart_api.testing.memcached import MemcachedServer
from quart_api.testing.postgres import PostgresServer, postgres_bindir
from quart_api.testing.redis import (
    CLUSTER_BUS_OFFSET,
    RedisClusterServer,
    RedisSentinelGroup,
    RedisServer,
    SentinelServer,
)
from quart_api.testing.redis_replicated import HostedRedisServer, RedisReplicatedCluster
from quart_api.testing.session import SessionServer, serve_for_session

__all__ = [
    "CLUSTER_BUS_OFFSET",
    "HOST",
    "HostedRedisServer",
    "HypercornApp",
    "MemcachedServer",
    "PostgresServer",
    "RedisClusterServer",
    "RedisReplicatedCluster",
    "RedisSentinelGroup",
    "RedisServer",
    "SentinelServer",
    "ServeError",
    "Server",
    "ServerError",
    "SessionServer",
    "find_binary",
    "free_port",
    "http_get",
    "postgres_bindir",
    "serve_for_session",
]
