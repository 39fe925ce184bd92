"""The real-server launchers answer, survive restarts on the same port, and can be paused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiomcache
import asyncpg
import pytest
import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.crc import key_slot

from quart_api.testing import (
    MemcachedServer,
    PostgresServer,
    RedisClusterServer,
    RedisSentinelGroup,
    RedisServer,
    Server,
    ServerError,
    find_binary,
)

Call = Callable[[], Awaitable[object]]


@contextlib.asynccontextmanager
async def redis_client(server: RedisServer) -> AsyncIterator[Call]:
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        yield client.ping
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def memcached_client(server: MemcachedServer) -> AsyncIterator[Call]:
    client = aiomcache.Client(server.host, server.port)

    async def set_and_get() -> None:
        await client.set(b"probe", b"value")
        assert await client.get(b"probe") == b"value"

    try:
        yield set_and_get
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def postgres_client(server: PostgresServer) -> AsyncIterator[Call]:
    connection = await asyncpg.connect(server.dsn(), timeout=5)

    async def select_one() -> None:
        assert await connection.fetchval("SELECT 1") == 1

    try:
        yield select_one
    finally:
        connection.terminate()  # never waits, even on a connection left mid-query


CLIENTS: dict[str, Callable[[Any], AbstractAsyncContextManager[Call]]] = {
    "redis_server": redis_client,
    "memcached_server": memcached_client,
    "postgres_server": postgres_client,
}


@pytest.fixture(params=list(CLIENTS))
def server_and_client(
    request: pytest.FixtureRequest,
) -> tuple[Server, Callable[[Any], AbstractAsyncContextManager[Call]]]:
    return request.getfixturevalue(request.param), CLIENTS[request.param]


async def test_server_answers_on_loopback(server_and_client: Any) -> None:
    server, client = server_and_client
    assert server.host == "127.0.0.1"
    assert server.port not in (6379, 11211, 5432)
    async with client(server) as call:
        await call()


async def test_restart_keeps_port_and_data_dir(server_and_client: Any) -> None:
    server, client = server_and_client
    port, pid, directory = server.port, server.pid, server.dir

    server.restart()

    assert (server.port, server.dir) == (port, directory)
    assert server.pid not in (None, pid)
    async with client(server) as call:
        await call()


async def test_paused_server_times_out_until_resumed(server_and_client: Any) -> None:
    server, client = server_and_client
    async with client(server) as call:
        await call()  # the connection is open before the pause
        server.pause()
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await call()
        finally:
            server.resume()
    async with client(server) as call:
        await call()


async def test_ensure_running_undoes_stop_and_pause(memcached_server: MemcachedServer) -> None:
    port = memcached_server.port
    memcached_server.stop()
    assert memcached_server.pid is None

    memcached_server.ensure_running()
    memcached_server.pause()
    memcached_server.ensure_running()

    assert memcached_server.port == port
    async with memcached_client(memcached_server) as call:
        await call()


async def test_redis_url_is_empty_for_each_test(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    with redis_server.client() as client:
        client.set("left-over", "1")

    url = request.getfixturevalue("redis_url")

    assert url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis_server.client() as client:
        assert client.dbsize() == 0


async def test_memcached_servers_is_empty_for_each_test(
    memcached_server: MemcachedServer, request: pytest.FixtureRequest
) -> None:
    async with memcached_client(memcached_server) as call:
        await call()  # stores b"probe"

    address = request.getfixturevalue("memcached_servers")

    assert address == f"127.0.0.1:{memcached_server.port}"
    client = aiomcache.Client(memcached_server.host, memcached_server.port)
    try:
        assert await client.get(b"probe") is None
    finally:
        await client.close()


async def test_pg_database_is_a_new_empty_database(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    name = pg_database.rsplit("/", 1)[1]
    assert pg_database == postgres_server.url(name)
    connection = await asyncpg.connect(postgres_server.dsn(name), timeout=5)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
    finally:
        await connection.close()
    assert tables == 0


async def test_dropped_database_is_gone(postgres_server: PostgresServer) -> None:
    postgres_server.create_database("test_dropped")
    postgres_server.drop_database("test_dropped")

    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(postgres_server.dsn("test_dropped"), timeout=5)


def test_database_name_must_be_a_plain_identifier(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="lower-case SQL identifier"):
        postgres_server.create_database('x"; DROP DATABASE postgres; --')


def test_missing_binary_names_the_package_to_install() -> None:
    expected = r"Debian package 'some-package' \(apt-get install some-package\)"
    with pytest.raises(ServerError, match=expected):
        find_binary("quart-api-no-such-server", "some-package")


async def test_cluster_serves_keys_in_every_slot_range(redis_cluster: RedisClusterServer) -> None:
    assert redis_cluster.states() == ["ok", "ok", "ok"]
    assert all(port < 55_536 for port in redis_cluster.ports)
    assert redis_cluster.url == "redis+cluster://" + ",".join(
        f"127.0.0.1:{port}" for port in redis_cluster.ports
    )
    # The first key of ours whose slot falls in each third of the slot space.
    keys = [
        next(f"key-{n}" for n in range(10_000) if key_slot(f"key-{n}".encode()) * 3 // 16_384 == i)
        for i in range(3)
    ]
    client = RedisCluster(
        startup_nodes=[ClusterNode(redis_cluster.host, port) for port in redis_cluster.ports]
    )
    try:
        for key in keys:
            await client.set(key, key)
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
        owners = {client.get_node_from_key(key) for key in keys}
        assert {owner.port for owner in owners if owner is not None} == set(redis_cluster.ports)
    finally:
        await client.aclose()


async def test_sentinel_group_serves_the_primary_it_names_and_replicates_it() -> None:
    with RedisSentinelGroup(replicas=1, sentinels=3, master_name="qa") as group:
        host_ports = ",".join(f"{h}:{p}" for h, p in group.sentinel_addresses)
        assert group.url == f"redis+sentinel://{host_ports}/qa"
        primary = group.primary()
        assert primary is group.redis[0]
        sentinel = Sentinel(group.sentinel_addresses, socket_timeout=2)
        writer = sentinel.master_for("qa", socket_timeout=2)
        try:
            await writer.set("written", "through the sentinels")
            with primary.client() as client:
                # Blocks until the replica acknowledges (it is linked once the group
                # is ready); the bound only keeps a broken link from hanging the test.
                assert client.wait(1, 30_000) == 1
            with group.redis[1].client() as replica:
                assert replica.get("written") == b"through the sentinels"
        finally:
            await writer.aclose()
