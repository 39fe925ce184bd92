"""What only the memory stores need: staying bounded in a long-running process."""

from __future__ import annotations

from quart_api.guards.stores import Limit, MemoryCacheStore, MemoryCounterStore


async def test_expired_counters_are_swept(clock) -> None:
    store = MemoryCounterStore(clock)
    for i in range(500):
        await store.check([Limit(f"rl:{i}", 5, 1000)], [])
    assert len(store) == 500
    clock.advance(2)
    for _ in range(1000):  # writes trigger the periodic sweep
        await store.check([Limit("rl:busy", 10_000, 1000)], [])
    assert len(store) == 1


async def test_counter_entries_are_capped_oldest_first(clock) -> None:
    store = MemoryCounterStore(clock, max_entries=100)
    for i in range(150):
        await store.check([Limit(f"rl:{i}", 5, 60_000)], [])
    assert len(store) <= 100
    assert (await store.check([Limit("rl:149", 5, 60_000)], [])).limits[0].remaining == 3
    assert (await store.check([Limit("rl:0", 5, 60_000)], [])).limits[0].remaining == 4


async def test_cache_entries_are_capped_oldest_first(clock) -> None:
    store = MemoryCacheStore(clock, max_entries=10)
    for i in range(20):
        await store.set(f"k{i}".encode(), b"v", 60)
    assert len(store) <= 10
    assert await store.get(b"k19") == b"v"
    assert await store.get(b"k0") is None


async def test_cache_bytes_are_capped(clock) -> None:
    store = MemoryCacheStore(clock, max_bytes=1000)
    for i in range(5):
        await store.set(f"k{i}".encode(), b"x" * 300, 60)
    assert await store.get(b"k4") == b"x" * 300
    assert await store.get(b"k0") is None
    assert len(store) == 3


async def test_expired_cache_entries_are_pruned(clock) -> None:
    store = MemoryCacheStore(clock)
    for i in range(500):
        await store.set(f"k{i}".encode(), b"v", 1)
    clock.advance(2)
    for _ in range(1000):
        await store.set(b"busy", b"v", 60)
    assert len(store) == 1


async def test_replacing_a_value_keeps_the_byte_count_right(clock) -> None:
    store = MemoryCacheStore(clock, max_bytes=1000)
    for _ in range(50):
        await store.set(b"same", b"x" * 600, 60)
    assert await store.get(b"same") == b"x" * 600


async def test_burst_is_exact_for_any_limit(clock) -> None:
    """Whole-microsecond intervals: no rounding drift lets a limit+1-th request in."""
    store = MemoryCounterStore(clock)
    for limit in (*range(990, 1100), 4999, 10_007):
        lim = Limit(f"rl:{limit}", limit, 1000)
        allowed = [(await store.check([lim], [])).allowed for _ in range(limit + 1)]
        assert allowed == [True] * limit + [False], limit
