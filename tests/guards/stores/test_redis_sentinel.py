"""``redis+sentinel://`` and ``valkey://``: the Redis store on real servers.

A Sentinel group is one primary, one replica and three sentinels (Debian's
``redis-server`` in ``--sentinel`` mode), all on loopback; Debian ships no Valkey,
and Valkey speaks Redis's protocol, so ``valkey://`` is tested against redis-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis as sync_redis

from quart_api.guards.errors import ConfigurationError
from quart_api.guards.stores import (
    Limit,
    RedisCounterStore,
    SentinelCounterStore,
    StoreError,
    counter_store_from_url,
)
from quart_api.guards.stores._redis_link import CHECK
from quart_api.testing import RedisSentinelGroup, RedisServer
from tests.guards.conftest import serving
from tests.guards.stores.conftest import limited_app

pytestmark = pytest.mark.slow

MINUTE = 60_000


def _group() -> RedisSentinelGroup:
    return RedisSentinelGroup(replicas=1, sentinels=3, down_after_ms=1000)


@pytest.fixture(scope="module")
def sentinel_group() -> Iterator[RedisSentinelGroup]:
    """A healthy group shared by the tests that do not break it."""
    with _group() as group:
        yield group


@pytest.fixture
def dying_group() -> Iterator[RedisSentinelGroup]:
    """A group of the test's own: the test kills its primary."""
    with _group() as group:
        yield group


async def test_a_sentinel_url_limits_requests_on_the_primary_the_sentinels_name(
    sentinel_group: RedisSentinelGroup,
) -> None:
    sentinel_group.flush()
    async with serving(limited_app(sentinel_group.url + "/0")) as client:
        statuses = [(await client.get("/things")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    with sentinel_group.primary().client() as primary:
        assert primary.keys("*:r:things:*"), "the counters live on the primary"


async def test_a_sentinel_url_picks_its_database(sentinel_group: RedisSentinelGroup) -> None:
    sentinel_group.flush()
    store = counter_store_from_url(sentinel_group.url + "/3", timeout=1.0)
    assert isinstance(store, SentinelCounterStore)
    await store.check([Limit("rl:{a}", 5, MINUTE)], [])
    await store.close()
    primary = sentinel_group.primary()
    with sync_redis.Redis(primary.host, primary.port, db=3) as db3, primary.client() as db0:
        assert db3.exists("rl:{a}")
        assert not db0.exists("rl:{a}")


async def test_a_sentinel_url_with_a_password_authenticates_to_the_servers() -> None:
    with _group() as group:
        for server in group.redis:
            with server.client() as client:
                client.config_set("masterauth", "s3cret")
                client.config_set("requirepass", "s3cret")
        hosts = group.url.partition("://")[2]
        good = counter_store_from_url(f"redis+sentinel://:s3cret@{hosts}", timeout=1.0)
        wrong = counter_store_from_url(f"redis+sentinel://:wrong@{hosts}", timeout=1.0)
        try:
            assert (await good.check([Limit("rl:{a}", 5, MINUTE)], [])).allowed
            with pytest.raises(StoreError):
                await wrong.check([Limit("rl:{a}", 5, MINUTE)], [])
        finally:
            await good.close()
            await wrong.close()


async def test_the_sentinel_store_finds_the_promoted_replica_after_the_primary_dies(
    dying_group: RedisSentinelGroup,
) -> None:
    store = counter_store_from_url(dying_group.url, timeout=0.5)
    limit = Limit("rl:{client}", 1000, MINUTE)
    assert (await store.check([limit], [])).allowed
    old = dying_group.primary()
    replica = next(s for s in dying_group.redis if s is not old)
    with replica.client() as client:
        scripts_before = client.script_exists(CHECK.sha.decode())
    old.kill()
    failed = 0
    for _ in range(150):  # bounded: 150 attempts, 0.1 s apart
        try:
            result = await store.check([limit], [])
        except StoreError:
            failed += 1
            await asyncio.sleep(0.1)
            continue
        break
    else:
        raise AssertionError("the store never reached the promoted replica")
    assert failed > 0, "the primary died: calls in between must fail, not hang"
    assert result.allowed
    assert dying_group.primary() is replica
    with replica.client() as client:
        assert client.script_exists(CHECK.sha.decode()) == [True]
        if scripts_before == [False]:  # the scripts were loaded again after NOSCRIPT
            assert int(client.info("commandstats")["cmdstat_script|load"]["calls"]) >= 1
        # the limit's state was replicated before the failover: it kept counting
        assert client.exists("rl:{client}")
    await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/master/x",
        "redis+sentinel://127.0.0.1:26379/a/1/2",
        "redis+sentinel://127.0.0.1/master",
        "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.2/master",
    ],
)
def test_a_malformed_sentinel_url_is_a_configuration_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL") as caught:
        counter_store_from_url(url)
    assert "pw" not in str(caught.value)


# -- valkey:// --------------------------------------------------------------------------


async def test_a_valkey_url_limits_requests_like_a_redis_url(
    redis_server: RedisServer, redis_url: str
) -> None:
    url = "valkey://" + redis_url.partition("://")[2]
    async with serving(limited_app(url)) as client:
        statuses = [(await client.get("/things")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    with redis_server.client() as client:
        assert client.keys("*:r:things:*")


async def test_a_valkeys_url_speaks_tls(redis_url: str) -> None:
    """``valkeys://`` is ``rediss://``: against a plain-text server the TLS handshake fails."""
    store = counter_store_from_url("valkeys://" + redis_url.partition("://")[2], timeout=0.5)
    assert isinstance(store, RedisCounterStore)
    with pytest.raises(StoreError):
        await store.check([Limit("rl:{a}", 5, MINUTE)], [])
    await store.close()
