"""Counter semantics, the same on memory, Redis and Redis Cluster (``counter_store``)."""

from __future__ import annotations

import asyncio

import pytest

from quart_api.guards.stores import BanCheck, CounterStore, Failure, Limit, Release, Tally

MINUTE = 60_000
BAN = BanCheck("fail:{c}", "ban:{c}")


def tally(member: str | None = "k:alice", limit: int = 3, window_ms: int = MINUTE) -> Tally:
    return Tally("t:{i:10.0.0.1}", member, limit, window_ms)


async def total(store: CounterStore, key: str = "t:{i:10.0.0.1}") -> int:
    """A tally's total, read without reserving anything."""
    return (await store.check([], [], [Tally(key, None, 1_000, MINUTE)])).tallies[0].failures


def failure(limit: int = 3, window_ms: int = MINUTE, **kw: object) -> Failure:
    return Failure("fail:{c}", "ban:{c}", limit, window_ms, **kw)  # type: ignore[arg-type]


async def test_limit_allows_exactly_limit_then_refuses(counter_store: CounterStore) -> None:
    lim = Limit("rl:{c}", 5, MINUTE)
    remaining = []
    for _ in range(5):
        result = await counter_store.check([lim], [])
        assert result.allowed
        remaining.append(result.limits[0].remaining)
    refused = await counter_store.check([lim], [])
    assert remaining == [4, 3, 2, 1, 0]
    assert not refused.allowed
    assert not refused.limits[0].allowed
    assert refused.limits[0].remaining == 0
    # one request comes back every window / limit = 12 s
    assert 11_900 <= refused.limits[0].retry_after_ms <= 12_000


@pytest.mark.parametrize(("limit", "window_ms"), [(7, MINUTE), (3, 1000), (1033, MINUTE)])
async def test_burst_is_exact_when_the_interval_is_not_whole(
    counter_store: CounterStore, limit: int, window_ms: int
) -> None:
    lim = Limit("rl:{c}", limit, window_ms)
    results = await asyncio.gather(*(counter_store.check([lim], []) for _ in range(limit + 3)))
    assert sum(r.allowed for r in results) == limit


async def test_allowed_request_reports_reset_until_quota_is_whole(
    counter_store: CounterStore,
) -> None:
    lim = Limit("rl:{c}", 4, MINUTE)
    await counter_store.check([lim], [])
    state = (await counter_store.check([lim], [])).limits[0]
    assert state.retry_after_ms == 0
    assert 29_900 <= state.reset_ms <= 30_000  # two of four spent: half a window


async def test_cost_consumes_that_many_requests(counter_store: CounterStore) -> None:
    heavy, light = Limit("rl:{c}", 10, MINUTE, cost=4), Limit("rl:{c}", 10, MINUTE, cost=2)
    assert (await counter_store.check([heavy], [])).limits[0].remaining == 6
    assert (await counter_store.check([heavy], [])).limits[0].remaining == 2
    refused = await counter_store.check([heavy], [])
    assert not refused.allowed
    assert refused.limits[0].remaining == 2
    assert (await counter_store.check([light], [])).limits[0].remaining == 0


async def test_refused_request_charges_nothing_all_or_nothing(counter_store: CounterStore) -> None:
    wide, narrow = Limit("rl:{c}:wide", 5, MINUTE), Limit("rl:{c}:narrow", 1, MINUTE)
    assert (await counter_store.check([wide, narrow], [])).allowed
    refused = await counter_store.check([wide, narrow], [])
    assert not refused.allowed
    assert [s.allowed for s in refused.limits] == [True, False]
    assert refused.limits[0].remaining == 4  # reported without the refused request
    assert (await counter_store.check([wide], [])).limits[0].remaining == 3


@pytest.mark.parametrize("tight", [1, 0], ids=["the-user-slot-refuses", "the-ip-slot-refuses"])
async def test_refused_request_charges_nothing_across_hash_slots(
    counter_store: CounterStore, tight: int
) -> None:
    """In a cluster these keys live in different slots: the charged one is refunded,
    whichever of the two refuses."""
    keys = ("rl:{10.0.0.1}", "rl:{u:alice}")
    limits = [Limit(key, 1 if i == tight else 5, MINUTE) for i, key in enumerate(keys)]
    other = 1 - tight
    assert (await counter_store.check(limits, [])).allowed
    refused = await counter_store.check(limits, [])
    assert not refused.allowed
    assert refused.limits[other].allowed
    assert not refused.limits[tight].allowed
    assert refused.limits[other].remaining == 4  # reported without the refused request
    assert (await counter_store.check([limits[other]], [])).limits[0].remaining == 3


async def test_ban_in_another_slot_charges_nothing(counter_store: CounterStore) -> None:
    ip = Limit("rl:{10.0.0.1}", 5, MINUTE)
    for _ in range(3):
        await counter_store.record_failure(failure())
    assert not (await counter_store.check([ip], [BAN])).allowed
    assert (await counter_store.check([ip], [])).limits[0].remaining == 4


async def test_ban_refuses_and_charges_nothing(counter_store: CounterStore) -> None:
    lim = Limit("rl:{c}", 5, MINUTE)
    for _ in range(3):
        await counter_store.record_failure(failure())
    blocked = await counter_store.check([lim], [BAN])
    assert not blocked.allowed
    assert blocked.banned
    assert blocked.bans[0].failures == 3
    assert 0 < blocked.bans[0].retry_after_ms <= MINUTE
    await counter_store.delete(["ban:{c}"])
    assert (await counter_store.check([lim], [BAN])).limits[0].remaining == 4


@pytest.mark.parametrize(
    ("dry_key", "real_key"),
    [("rl:{c}:dry", "rl:{c}:real"), ("rl:{10.0.0.1}", "rl:{u:alice}")],
    ids=["one-slot", "two-slots"],
)
async def test_dry_run_limit_reports_but_never_refuses(
    counter_store: CounterStore, dry_key: str, real_key: str
) -> None:
    dry, real = Limit(dry_key, 1, MINUTE, dry_run=True), Limit(real_key, 5, MINUTE)
    await counter_store.check([dry, real], [])
    result = await counter_store.check([dry, real], [])
    assert result.allowed
    assert not result.limits[0].allowed
    assert result.limits[0].retry_after_ms > 0
    assert result.limits[1].remaining == 3


async def test_retry_after_is_never_earlier_than_the_pass(
    counter_store: CounterStore, advance
) -> None:
    lim = Limit("rl:{c}", 2, 400)
    await counter_store.check([lim], [])
    await counter_store.check([lim], [])
    refused = await counter_store.check([lim], [])
    assert not refused.allowed
    wait = refused.limits[0].retry_after_ms
    assert 0 < wait <= 200
    if counter_store.kind == "memory":  # exact clock: one ms earlier is still too early
        await advance((wait - 1) / 1000)
        assert not (await counter_store.check([lim], [])).allowed
        await advance(0.001)
    else:
        await advance(wait / 1000)
    assert (await counter_store.check([lim], [])).allowed


async def test_client_under_the_rate_is_never_refused(counter_store: CounterStore, advance) -> None:
    """A window always ends: calls spaced at the rate pass forever (the original's flaw)."""
    real = counter_store.kind != "memory"
    lim = Limit("rl:{c}", 4, 200)  # a burst of 4, then one every 50 ms
    for _ in range(4):
        assert (await counter_store.check([lim], [])).allowed
    for _ in range(12 if real else 2_000):
        await advance(0.055 if real else 0.050)  # the fake clock sits exactly on the rate
        assert (await counter_store.check([lim], [])).allowed


async def test_quota_is_whole_again_after_the_window(counter_store: CounterStore, advance) -> None:
    lim = Limit("rl:{c}", 3, 300)
    for _ in range(3):
        await counter_store.check([lim], [])
    assert not (await counter_store.check([lim], [])).allowed
    await advance(0.31)
    assert (await counter_store.check([lim], [])).limits[0].remaining == 2


async def test_concurrent_checks_never_admit_more_than_limit(counter_store: CounterStore) -> None:
    lim = Limit("rl:{c}", 10, MINUTE)
    results = await asyncio.gather(*(counter_store.check([lim], []) for _ in range(50)))
    assert sum(r.allowed for r in results) == 10


async def test_empty_check_is_allowed(counter_store: CounterStore) -> None:
    assert (await counter_store.check([], [])).allowed


async def test_limit_that_could_never_pass_is_a_value_error(counter_store: CounterStore) -> None:
    with pytest.raises(ValueError, match="cost"):
        await counter_store.check([Limit("rl:{c}", 2, MINUTE, cost=3)], [])


async def test_failures_allow_exactly_limit(counter_store: CounterStore) -> None:
    states = [await counter_store.record_failure(failure(limit=3)) for _ in range(3)]
    assert [s.banned for s in states] == [False, False, True]
    assert [s.failures for s in states] == [1, 2, 3]
    before = await counter_store.check([], [BAN])
    assert before.banned
    assert before.bans[0].failures == 3


async def test_ban_lasts_the_rest_of_the_failure_window(
    counter_store: CounterStore, advance
) -> None:
    await counter_store.record_failure(failure(limit=2, window_ms=400))
    await advance(0.2)
    ban = await counter_store.record_failure(failure(limit=2, window_ms=400))
    assert ban.banned
    assert ban.retry_after_ms <= 200
    await advance(0.21)
    after = await counter_store.check([], [BAN])
    assert not after.banned
    assert after.bans[0].failures == 0


async def test_failure_window_is_never_extended(counter_store: CounterStore, advance) -> None:
    await counter_store.record_failure(failure(limit=5, window_ms=300))
    await advance(0.2)
    assert (await counter_store.record_failure(failure(limit=5, window_ms=300))).failures == 2
    await advance(0.11)
    assert (await counter_store.check([], [BAN])).bans[0].failures == 0


async def test_escalation_doubles_ban_capped(counter_store: CounterStore) -> None:
    escalating = failure(limit=1, window_ms=MINUTE, offence_key="off:{c}", max_ban_ms=200_000)
    bans = []
    for _ in range(3):
        bans.append((await counter_store.record_failure(escalating)).retry_after_ms)
        await counter_store.delete(["fail:{c}", "ban:{c}"])  # as `unban` would, keeping offences
    assert bans == [MINUTE, 2 * MINUTE, 200_000]


async def test_failures_while_banned_add_no_offence(counter_store: CounterStore) -> None:
    escalating = failure(limit=2, window_ms=MINUTE, offence_key="off:{c}", max_ban_ms=10 * MINUTE)
    await counter_store.record_failure(escalating)
    first = await counter_store.record_failure(escalating)
    straggler = await counter_store.record_failure(escalating)
    assert first.banned
    assert straggler.banned
    assert straggler.failures == 3
    assert straggler.retry_after_ms <= MINUTE  # not doubled


async def test_concurrent_failures_ban_at_exactly_limit(counter_store: CounterStore) -> None:
    states = await asyncio.gather(
        *(counter_store.record_failure(failure(limit=5)) for _ in range(20))
    )
    assert sorted(s.failures for s in states) == list(range(1, 21))
    assert {s.failures for s in states if s.banned} == set(range(5, 21))


async def test_delete_forgets_counters(counter_store: CounterStore) -> None:
    await counter_store.record_failure(failure())
    await counter_store.delete(["fail:{c}", "never-set"])
    assert (await counter_store.check([], [BAN])).bans[0].failures == 0


async def test_delete_matching_removes_only_matching_keys(counter_store: CounterStore) -> None:
    for who in ("{1.2.3.4}", "{1.2.3.5}", "{9.9.9.9}", "{user-1}"):
        await counter_store.check(
            [Limit(f"rl:{who}:a", 5, MINUTE), Limit(f"rl:{who}:b", 5, MINUTE)], []
        )
    assert await counter_store.delete_matching("rl:{1.2.3.*") == 4
    assert (await counter_store.check([Limit("rl:{1.2.3.4}:a", 5, MINUTE)], [])).limits[
        0
    ].remaining == 4
    assert (await counter_store.check([Limit("rl:{user-1}:a", 5, MINUTE)], [])).limits[
        0
    ].remaining == 3


async def test_store_is_usable_after_close(counter_store: CounterStore) -> None:
    lim = Limit("rl:{c}", 5, MINUTE)
    await counter_store.check([lim], [])
    await counter_store.close()
    await counter_store.ping()
    assert (await counter_store.check([lim], [])).limits[0].remaining == 3


# -- failure tallies (``@protected(key=...)``) ----------------------------------------


async def test_tally_reserves_exactly_limit_attempts_then_refuses(
    counter_store: CounterStore,
) -> None:
    results = [await counter_store.check([], [], [tally(limit=3)]) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.tallies[0].failures for r in results] == [1, 2, 3, 3]
    refused = results[-1].tallies[0]
    assert refused.banned
    assert 0 < refused.retry_after_ms <= MINUTE


async def test_concurrent_reservations_never_exceed_the_limit(counter_store: CounterStore) -> None:
    results = await asyncio.gather(
        *(counter_store.check([], [], [tally(limit=7)]) for _ in range(50))
    )
    assert sum(r.allowed for r in results) == 7
    assert await total(counter_store) == 7


async def test_a_refusing_limit_reserves_no_tally_attempt(counter_store: CounterStore) -> None:
    lim = Limit("rl:{i:10.0.0.1}", 1, MINUTE)
    assert (await counter_store.check([lim], [], [tally()])).allowed
    refused = await counter_store.check([lim], [], [tally()])
    assert not refused.allowed
    assert await total(counter_store) == 1


async def test_a_tally_at_its_limit_charges_no_limit(counter_store: CounterStore) -> None:
    lim = Limit("rl:{i:10.0.0.1}", 5, MINUTE)
    await counter_store.check([], [], [tally(limit=1)])
    refused = await counter_store.check([lim], [], [tally(limit=1)])
    assert not refused.allowed
    assert refused.banned
    assert (await counter_store.check([lim], [])).limits[0].remaining == 4


async def test_tally_refused_in_another_slot_reserves_nothing(counter_store: CounterStore) -> None:
    """In a cluster the client's and the key's tallies live in different slots."""
    client, account = "t:{i:10.0.0.1}", "t:{k:alice}"
    await counter_store.check([], [], [Tally(account, "i:10.0.0.9", 1, MINUTE)])
    refused = await counter_store.check(
        [], [], [Tally(client, "k:alice", 5, MINUTE), Tally(account, "i:10.0.0.1", 1, MINUTE)]
    )
    assert not refused.allowed
    assert [t.banned for t in refused.tallies] == [False, True]
    assert await total(counter_store, client) == 0


async def test_release_gives_back_one_attempt_of_one_member(counter_store: CounterStore) -> None:
    for member in ("k:alice", "k:alice", "k:bob"):
        await counter_store.check([], [], [tally(member)])
    await counter_store.release([Release("t:{i:10.0.0.1}", "k:alice")])
    assert await total(counter_store) == 2
    await counter_store.release([Release("t:{i:10.0.0.1}", "k:alice", 0)])
    assert await total(counter_store) == 1, "all of alice's are gone, bob's stays"
    await counter_store.release([Release("t:{i:10.0.0.1}", "k:alice", 0)])
    assert await total(counter_store) == 1, "nothing left to give back"


async def test_an_emptied_tally_is_deleted_and_starts_a_new_window(
    counter_store: CounterStore, advance
) -> None:
    await counter_store.check([], [], [tally(window_ms=300)])
    await counter_store.release([Release("t:{i:10.0.0.1}", "k:alice")])
    await advance(0.2)
    await counter_store.check([], [], [tally(limit=1, window_ms=300)])
    await advance(0.15)  # past the first window, inside the second
    assert not (await counter_store.check([], [], [tally(limit=1, window_ms=300)])).allowed


async def test_tally_window_is_never_extended(counter_store: CounterStore, advance) -> None:
    await counter_store.check([], [], [tally(limit=2, window_ms=300)])
    await advance(0.2)
    await counter_store.check([], [], [tally(limit=2, window_ms=300)])
    assert not (await counter_store.check([], [], [tally(limit=2, window_ms=300)])).allowed
    await advance(0.11)
    assert (await counter_store.check([], [], [tally(limit=2, window_ms=300)])).allowed


async def test_delete_matching_removes_tallies_too(counter_store: CounterStore) -> None:
    await counter_store.check([], [], [tally()])
    await counter_store.check([], [], [Tally("t:{i:10.0.0.2}", "k:alice", 3, MINUTE)])
    assert await counter_store.delete_matching("t:{i:10.0.0.1}*") == 1
    assert await total(counter_store) == 0
    assert await total(counter_store, "t:{i:10.0.0.2}") == 1


@pytest.mark.parametrize("member", ["", "total"])
async def test_a_tally_member_that_could_spell_the_total_is_a_value_error(
    counter_store: CounterStore, member: str
) -> None:
    with pytest.raises(ValueError, match="member"):
        await counter_store.check([], [], [tally(member)])
