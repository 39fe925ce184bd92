"""Password hashing: argon2id, never raising on bad input, off-loop variants, bounded.

The bound is checked with a gated hasher (tests/api/helpers.py): hashes wait at a gate
the test opens, so "how many run at once" is counted, never timed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher

from quart_api import passwords
from tests.api.helpers import GatedHasher

CHEAP = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


@pytest.fixture(autouse=True)
def _cheap() -> Iterator[None]:
    passwords.configure(**CHEAP)
    yield
    passwords.configure(**CHEAP)
    passwords.configure_slots()


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedHasher]:
    hasher = GatedHasher(passwords._hasher)
    monkeypatch.setattr(passwords, "_hasher", hasher)
    try:
        yield hasher
    finally:
        hasher.open()


def test_hash_is_argon2id_with_the_configured_cost() -> None:
    digest = passwords.hash_password("correct horse")
    assert digest.startswith("$argon2id$")
    assert "m=8,t=1,p=1" in digest
    assert passwords.verify_password(digest, "correct horse")


def test_wrong_password_or_malformed_hash_is_false_not_an_error() -> None:
    digest = passwords.hash_password("correct horse")
    assert not passwords.verify_password(digest, "wrong horse")
    for bad in ("", "plaintext", "$argon2id$v=19$m=8,t=1,p=1$broken", "$2b$12$bcrypt"):
        assert not passwords.verify_password(bad, "correct horse")


def test_hashes_of_another_cost_verify_and_need_a_rehash() -> None:
    old = passwords.hash_password("correct horse")
    passwords.configure(time_cost=2, memory_cost=16, parallelism=1)
    assert passwords.verify_password(old, "correct horse")
    assert passwords.needs_rehash(old)
    assert not passwords.needs_rehash(passwords.hash_password("correct horse"))
    assert passwords.needs_rehash("not a hash")


@pytest.mark.parametrize(
    "cost",
    [
        {"time_cost": 0, "memory_cost": 8, "parallelism": 1},
        {"time_cost": 1, "memory_cost": 7, "parallelism": 1},
        {"time_cost": 1, "memory_cost": 8, "parallelism": 2},
        {"time_cost": True, "memory_cost": 8, "parallelism": 1},
    ],
)
def test_bad_cost_is_refused_with_the_parameter_named(cost: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="argon2 "):
        passwords.configure(**cost)


async def test_async_variants_run_in_a_worker_thread() -> None:
    seen: list[str] = []
    original = PasswordHasher.hash

    def spy(self: PasswordHasher, secret: str | bytes, *, salt: bytes | None = None) -> str:
        seen.append(threading.current_thread().name)
        return original(self, secret, salt=salt)

    PasswordHasher.hash = spy  # type: ignore[method-assign]
    try:
        digest = await passwords.ahash_password("correct horse")
    finally:
        PasswordHasher.hash = original  # type: ignore[method-assign]
    assert seen
    assert seen[0] != threading.main_thread().name
    assert await passwords.averify_password(digest, "correct horse")
    assert not await passwords.averify_password(digest, "wrong")
    assert not await passwords.averify_password("garbage", "wrong")


async def test_hashing_does_not_block_the_event_loop() -> None:
    passwords.configure(time_cost=3, memory_cost=65536, parallelism=1)  # ~0.1 s a hash
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await passwords.ahash_password("correct horse")
    finally:
        task.cancel()
    assert ticks >= 3


def test_dummy_hash_has_the_current_cost_and_matches_nothing() -> None:
    first = passwords.DUMMY_HASH
    assert first is passwords.dummy_hash()
    assert "m=8,t=1,p=1" in first
    assert not passwords.verify_password(first, "")
    passwords.configure(time_cost=2, memory_cost=16, parallelism=1)
    assert "m=16,t=2,p=1" in passwords.DUMMY_HASH


def test_default_slots_are_the_cores_this_process_may_use() -> None:
    import os

    assert passwords.default_slots() == len(os.sched_getaffinity(0))


async def test_a_storm_of_hashes_runs_at_most_slots_at_once(gated: GatedHasher) -> None:
    passwords.configure_slots(2, queue_timeout=30)
    storm = [asyncio.ensure_future(passwords.ahash_password(f"pw {i}")) for i in range(8)]
    storm += [
        asyncio.ensure_future(passwords.averify_password(gated.sample_hash, "x")) for _ in range(4)
    ]
    await gated.wait_running(2)
    for _ in range(20):  # loop turns in which a third would have entered the gate
        await asyncio.sleep(0)
    assert gated.running == 2
    gated.open()
    results = await asyncio.gather(*storm)
    assert gated.peak == 2
    assert gated.calls == 12
    assert all(isinstance(r, str) for r in results[:8])
    assert results[8:] == [False] * 4


async def test_a_caller_that_gets_no_slot_within_the_queue_timeout_is_told_busy(
    gated: GatedHasher,
) -> None:
    passwords.configure_slots(1, queue_timeout=0.05)
    holder = asyncio.ensure_future(passwords.ahash_password("first"))
    await gated.wait_running(1)
    with pytest.raises(passwords.PasswordHashingBusy, match="retry"):
        await passwords.averify_password(gated.sample_hash, "second")
    gated.open()
    await holder
    assert gated.calls == 1  # the refused caller never hashed


async def test_a_cancelled_callers_hash_keeps_its_slot_until_it_ends(gated: GatedHasher) -> None:
    """A client that hangs up does not free a core its hash is still burning."""
    passwords.configure_slots(1, queue_timeout=0.05)
    abandoned = asyncio.ensure_future(passwords.ahash_password("first"))
    await gated.wait_running(1)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    with pytest.raises(passwords.PasswordHashingBusy):
        await passwords.ahash_password("second")
    gated.open()
    for _ in range(2000):  # the abandoned hash ends and its slot comes back
        if gated.running == 0:
            break
        await asyncio.sleep(0.005)
    assert await passwords.ahash_password("third")


def test_bad_slot_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="slots"):
        passwords.configure_slots(0)
    with pytest.raises(ValueError, match="queue_timeout"):
        passwords.configure_slots(1, queue_timeout=0)


async def test_the_dummy_hash_is_made_off_the_event_loop_in_a_slot(gated: GatedHasher) -> None:
    passwords.configure(**CHEAP)  # a new cost: the dummy hash is made again
    passwords._hasher = gated  # configure replaced it
    waiting = asyncio.ensure_future(passwords.adummy_hash())
    await gated.wait_running(1)  # the loop runs this line while the hash waits
    gated.open()
    assert await waiting == passwords.DUMMY_HASH
    assert gated.calls == 1
