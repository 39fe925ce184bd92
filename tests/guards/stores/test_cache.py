"""Cache semantics, the same on memory, one memcached and two (``cache_store``)."""

from __future__ import annotations

import asyncio

import pytest

from quart_api.guards.stores import CacheStore, MemcachedCacheStore

DAY = 24 * 3600


async def test_get_returns_what_set_stored(cache_store: CacheStore) -> None:
    assert await cache_store.set(b"page:/a", b"body", 60)
    assert await cache_store.get(b"page:/a") == b"body"


async def test_empty_value_is_a_hit_not_a_miss(cache_store: CacheStore) -> None:
    await cache_store.set(b"empty", b"", 60)
    assert await cache_store.get(b"empty") == b""
    assert await cache_store.get(b"absent") is None


async def test_binary_values_round_trip_intact(cache_store: CacheStore) -> None:
    value = b"\r\nEND\r\nVALUE x 0 1\r\n\x00\xff" * 1000
    await cache_store.set(b"bin", value, 60)
    assert await cache_store.get(b"bin") == value


async def test_large_value_under_item_limit_round_trips(cache_store: CacheStore) -> None:
    value = bytes(range(256)) * 2000  # 512 KB
    assert await cache_store.set(b"large", value, 60)
    assert await cache_store.get(b"large") == value


async def test_value_over_item_limit_is_skipped(cache_store: CacheStore) -> None:
    too_big = b"x" * (cache_store.max_item_bytes + 1)
    assert await cache_store.set(b"big", too_big, 60) is False
    assert await cache_store.add(b"big", too_big, 60) is False
    assert await cache_store.get(b"big") is None
    assert await cache_store.set(b"big", too_big[:-1], 60)


async def test_set_replaces_the_value(cache_store: CacheStore) -> None:
    await cache_store.set(b"k", b"one", 60)
    await cache_store.set(b"k", b"two", 60)
    assert await cache_store.get(b"k") == b"two"


async def test_add_stores_only_if_absent(cache_store: CacheStore) -> None:
    assert await cache_store.add(b"lock:/a", b"1", 30)
    assert not await cache_store.add(b"lock:/a", b"2", 30)
    assert await cache_store.get(b"lock:/a") == b"1"


async def test_concurrent_adds_have_one_winner(cache_store: CacheStore) -> None:
    wins = await asyncio.gather(*(cache_store.add(b"lock:/b", b"1", 30) for _ in range(20)))
    assert sum(wins) == 1


async def test_delete_reports_whether_the_key_existed(cache_store: CacheStore) -> None:
    await cache_store.set(b"k", b"v", 60)
    assert await cache_store.delete(b"k")
    assert not await cache_store.delete(b"k")
    assert await cache_store.get(b"k") is None


async def test_incr_creates_at_one_then_counts(cache_store: CacheStore) -> None:
    assert await cache_store.incr(b"gen:users", 60) == 1
    assert await cache_store.incr(b"gen:users", 60) == 2
    assert await cache_store.get(b"gen:users") == b"2"


async def test_concurrent_incr_of_a_missing_counter_counts_every_call(
    cache_store: CacheStore,
) -> None:
    values = await asyncio.gather(*(cache_store.incr(b"gen:race", 60) for _ in range(20)))
    assert sorted(values) == list(range(1, 21))


async def test_entry_expires_after_its_ttl(cache_store: CacheStore, advance) -> None:
    await cache_store.set(b"short", b"v", 1)
    await cache_store.incr(b"counter", 1)
    await cache_store.set(b"forever", b"v", 0)
    await advance(2.1)  # memcached's clock ticks in whole seconds
    assert await cache_store.get(b"short") is None
    assert await cache_store.get(b"counter") is None
    assert await cache_store.get(b"forever") == b"v"


async def test_ttl_over_thirty_days_is_kept(cache_store: CacheStore) -> None:
    """memcached reads exptime over 30 days as a timestamp: sent raw it would be 1970."""
    await cache_store.set(b"long", b"v", 60 * DAY)
    assert await cache_store.get(b"long") == b"v"


async def test_negative_ttl_is_a_value_error(cache_store: CacheStore) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await cache_store.set(b"k", b"v", -1)


async def test_key_length_checked_in_bytes(cache_store: CacheStore) -> None:
    with pytest.raises(ValueError, match="250"):
        await cache_store.get(("é" * 200).encode())  # 200 characters, 400 bytes
    assert await cache_store.set(("é" * 125).encode(), b"v", 60)  # exactly 250 bytes
    assert await cache_store.get(("é" * 125).encode()) == b"v"


@pytest.mark.parametrize(
    "key",
    [b"", b"a b", b"a\nb", b"a\x00", b"tab\t", "nbsp\u00a0".encode(), b"\xff\xfe", "str"],
    ids=["empty", "space", "newline", "nul", "tab", "unicode-space", "not-utf8", "str"],
)
async def test_bad_keys_are_value_errors(cache_store: CacheStore, key: bytes) -> None:
    for call in (
        lambda: cache_store.get(key),
        lambda: cache_store.set(key, b"v", 1),
        lambda: cache_store.add(key, b"v", 1),
        lambda: cache_store.delete(key),
        lambda: cache_store.incr(key),
    ):
        with pytest.raises(ValueError, match="cache key"):
            await call()


async def test_clear_forgets_everything(cache_store: CacheStore) -> None:
    keys = [f"k{i}".encode() for i in range(20)]  # on both servers of memcached2
    for key in keys:
        await cache_store.set(key, b"v", 60)
    await cache_store.clear()
    assert [await cache_store.get(key) for key in keys] == [None] * 20


async def test_store_is_usable_after_close(cache_store: CacheStore) -> None:
    await cache_store.set(b"k", b"v", 60)
    await cache_store.close()
    await cache_store.ping()
    assert await cache_store.get(b"k") == b"v"


async def test_gets_counts_get_commands(cache_store: CacheStore) -> None:
    assert isinstance(cache_store, MemcachedCacheStore) or cache_store.kind == "memory"
    before = cache_store.gets  # type: ignore[attr-defined]
    await cache_store.get(b"a")
    await cache_store.get(b"b")
    await cache_store.set(b"a", b"v", 1)
    assert cache_store.gets - before == 2  # type: ignore[attr-defined]
