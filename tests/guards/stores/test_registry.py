"""Choosing a store from a setting (the registry by URL scheme), and the public names."""

from __future__ import annotations

import inspect

import pytest

import quart_api.guards.stores as stores
from quart_api.guards.errors import ConfigurationError
from quart_api.guards.stores import (
    MemcachedCacheStore,
    MemoryCacheStore,
    MemoryCounterStore,
    RedisCounterStore,
    SentinelCounterStore,
    cache_store_from_servers,
    counter_store_from_url,
)
from quart_api.guards.stores.registry import COUNTER_BACKENDS


@pytest.mark.parametrize("url", [None, "", "  "])
def test_unset_redis_url_means_memory(url: str | None) -> None:
    assert isinstance(counter_store_from_url(url), MemoryCounterStore)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:secret@redis.example:6380/1",
        "unix:///run/redis.sock?db=2",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
        "redis+cluster://user:pw@10.0.0.1:7000",
        "REDIS://127.0.0.1",
        "valkey://127.0.0.1:6379/0",
        "valkeys://user:secret@valkey.example:6380/1",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
        "redis+sentinel://:pw@10.0.0.1:26379/mymaster/2",
    ],
)
def test_redis_urls_make_a_redis_store_without_connecting(url: str) -> None:
    store = counter_store_from_url(url, timeout=0.1, key_prefix="app:")
    assert isinstance(store, RedisCounterStore)
    assert store.kind == "redis"


def test_each_scheme_has_one_backend_in_the_registry() -> None:
    schemes = [scheme for backend in COUNTER_BACKENDS for scheme in backend.schemes]
    assert len(schemes) == len(set(schemes))
    assert set(schemes) >= {"redis", "rediss", "unix", "valkey", "valkeys", "redis+cluster"}
    assert "redis+sentinel" in schemes
    assert isinstance(counter_store_from_url("redis+sentinel://h:1/m"), SentinelCounterStore)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379", "memcached://x:1", "127.0.0.1:6379", "valkey+cluster://h:1"],
)
def test_unknown_scheme_is_a_configuration_error_naming_the_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL") as caught:
        counter_store_from_url(url)
    assert url in str(caught.value)


def test_configuration_error_hides_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        counter_store_from_url("http://admin:hunter2@10.0.0.1:6379")
    assert "hunter2" not in str(caught.value)
    assert "10.0.0.1:6379" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://", "redis+cluster://a:1,b", "redis+cluster://a:x", "redis+cluster://a:0"],
)
def test_malformed_cluster_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="host:port"):
        counter_store_from_url(url)


@pytest.mark.parametrize("servers", [None, "", " "])
def test_unset_memcached_servers_means_memory(servers: str | None) -> None:
    assert isinstance(cache_store_from_servers(servers), MemoryCacheStore)


def test_server_list_makes_a_memcached_store_without_connecting() -> None:
    store = cache_store_from_servers("10.0.0.1:11211, 10.0.0.2:11212", timeout=0.1)
    assert isinstance(store, MemcachedCacheStore)
    assert store.servers == [("10.0.0.1", 11211), ("10.0.0.2", 11212)]


@pytest.mark.parametrize(
    "servers",
    ["localhost", "h:", ":11211", "h:abc", "h:70000", "a:1,,b:2", "memcached://127.0.0.1:11211"],
)
def test_malformed_server_list_is_a_configuration_error_naming_it(servers: str) -> None:
    with pytest.raises(ConfigurationError, match="MEMCACHED_SERVERS") as caught:
        cache_store_from_servers(servers)
    assert repr(servers) in str(caught.value)


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)


def test_exported_members_match_all() -> None:
    public = {
        name
        for name, value in vars(stores).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(stores.__all__) == public
    assert sorted(stores.__all__) == stores.__all__
