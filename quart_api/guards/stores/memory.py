"""In-process stores: the embedded default when no Redis or memcached is configured.

They implement exactly the semantics of the real backends (the same tests run on
all of them) but only for one process: under several workers each worker has its
own counters and cache, which is why the guards warn about that setup.

Capabilities: :class:`MemoryCounterStore` has atomic check-and-charge of several
limits (all-or-nothing: nothing awaits inside a call, so nothing interleaves),
failure counting with escalating bans, and failure tallies. :class:`MemoryCacheStore`
has get / set / add / delete / incr with whole-second TTLs. Both take an injectable ``clock``
(seconds, float) so tests never sleep.

Memory stays bounded: expired entries are dropped when read, swept every
``_SWEEP_EVERY`` writes, and past ``max_entries`` (or ``max_bytes`` for the cache)
the oldest entries are evicted first.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence

from .base import (
    TALLY_TOTAL,
    BanCheck,
    BanState,
    CacheStore,
    CheckResult,
    CounterStore,
    Failure,
    Limit,
    LimitState,
    Release,
    StoreError,
    Tally,
    check_cache_key,
    gcra_costs,
    validate_ban_check,
    validate_failure,
    validate_tally,
)

__all__ = ["MemoryCacheStore", "MemoryCounterStore"]

Clock = Callable[[], float]

_SWEEP_EVERY = 1000
_NEVER = float("inf")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class MemoryCounterStore(CounterStore):
    """GCRA limits, failure bans and tallies in dicts, same algorithms as the Lua scripts.

    Args:
        clock: seconds as a float (``time.monotonic`` by default); tests inject one.
        max_entries: bound on stored keys; the oldest are evicted past it.
    """

    kind = "memory"

    def __init__(self, clock: Clock = time.monotonic, *, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max_entries = max_entries
        # key -> [value, expires_at_us]; every entry expires (a window always ends).
        self._data: dict[str, list[int]] = {}
        # tally key -> ({member: count, TALLY_TOTAL: total}, expires_at_us)
        self._tallies: dict[str, tuple[dict[str, int], int]] = {}
        self._writes = 0

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    def _get(self, key: str, now: int) -> int | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._data[key]
            return None
        return entry[0]

    def _ttl_us(self, key: str, now: int) -> int:
        """Remaining life of ``key`` in microseconds, or -1 when absent (like PTTL -2)."""
        entry = self._data.get(key)
        if entry is None or entry[1] <= now:
            return -1
        return entry[1] - now

    def _set(self, key: str, value: int, expires_at: int, now: int) -> None:
        self._data[key] = [value, expires_at]
        self._writes += 1
        if self._writes >= _SWEEP_EVERY or len(self._data) > self._max_entries:
            self._sweep(now)

    def _sweep(self, now: int) -> None:
        self._writes = 0
        for data in (self._data, self._tallies):
            for key in [k for k, e in data.items() if e[1] <= now]:
                del data[key]
        excess = len(self._data) + len(self._tallies) - self._max_entries
        # dicts keep insertion order: the first keys are the oldest
        for data in (self._data, self._tallies):
            if excess > 0:
                doomed = list(data)[:excess]
                for key in doomed:
                    del data[key]
                excess -= len(doomed)

    def _tally(self, key: str, now: int) -> tuple[dict[str, int], int] | None:
        entry = self._tallies.get(key)
        if entry is not None and entry[1] <= now:
            del self._tallies[key]
            return None
        return entry

    async def check(
        self, limits: Sequence[Limit], bans: Sequence[BanCheck], tallies: Sequence[Tally] = ()
    ) -> CheckResult:
        """Check and charge ``limits``, read ``bans`` and ``tallies``; see ``check.lua``."""
        for tally in tallies:
            validate_tally(tally)
        now = self._now_us()
        ok = True
        plan: list[tuple[Limit, int, int, int, int, bool]] = []
        for lim in limits:
            window_us, interval_us, cost_us = gcra_costs(lim.limit, lim.window_ms, lim.cost)
            tat = self._get(lim.key, now)
            debt = 0 if tat is None else max(tat - now, 0)
            fits = debt + cost_us <= window_us
            if not fits and not lim.dry_run:
                ok = False
            plan.append((lim, debt, window_us, interval_us, cost_us, fits))
        ban_states = []
        reserve: dict[str, int] = {}  # pending_key -> window_ms
        for ban in bans:
            validate_ban_check(ban)
            left = self._ttl_us(ban.ban_key, now)
            failures = self._get(ban.fail_key, now) or 0
            if left >= 0:
                ok = False
                ban_states.append(BanState(True, failures, _cdiv(left, 1000)))
            elif ban.pending_key is None:
                ban_states.append(BanState(False, failures, 0))
            else:
                pending = self._get(ban.pending_key, now) or 0
                if failures + pending + ban.in_flight_here >= ban.limit:
                    ok = False
                    ban_states.append(BanState(True, failures, 1000))
                else:
                    ban_states.append(BanState(False, failures, 0))
                    if failures > 0 or ban.in_flight_here > 0:
                        reserve[ban.pending_key] = ban.window_ms
        tally_totals = []
        for tally in tallies:
            entry = self._tally(tally.key, now)
            total = 0 if entry is None else entry[0][TALLY_TOTAL]
            if total >= tally.limit:
                ok = False
            tally_totals.append(total)
        states = []
        for lim, debt, window_us, interval_us, cost_us, fits in plan:
            retry_ms = 0
            if fits:
                if ok:
                    debt += cost_us
                    if debt > 0:
                        self._set(lim.key, now + debt, now + _cdiv(debt, 1000) * 1000, now)
            else:
                retry_ms = _cdiv(debt + cost_us - window_us, 1000)
            remaining = max((window_us - debt) // interval_us, 0)
            states.append(LimitState(fits, remaining, _cdiv(debt, 1000), retry_ms))
        if ok and reserve:
            for pending_key, window_ms in reserve.items():
                pending = (self._get(pending_key, now) or 0) + 1
                self._set(pending_key, pending, now + window_ms * 1000, now)
            ban_states = [
                state._replace(reserved=True) if ban.pending_key in reserve else state
                for ban, state in zip(bans, ban_states, strict=True)
            ]
        tally_states = []
        for tally, total in zip(tallies, tally_totals, strict=True):
            if total >= tally.limit:
                left = self._ttl_tally_us(tally.key, now)
                tally_states.append(BanState(True, total, _cdiv(left, 1000)))
                continue
            if ok and tally.member is not None:
                entry = self._tally(tally.key, now)
                if entry is None:  # the window starts at the first attempt, never extended
                    entry = ({TALLY_TOTAL: 0}, now + tally.window_ms * 1000)
                    self._tallies[tally.key] = entry
                    self._writes += 1
                counts = entry[0]
                counts[tally.member] = counts.get(tally.member, 0) + 1
                total = counts[TALLY_TOTAL] = counts[TALLY_TOTAL] + 1
            tally_states.append(BanState(False, total, 0))
        if len(self._data) + len(self._tallies) > self._max_entries:
            self._sweep(now)
        return CheckResult(ok, tuple(states), tuple(ban_states), tuple(tally_states))

    def _ttl_tally_us(self, key: str, now: int) -> int:
        entry = self._tally(key, now)
        return 0 if entry is None else entry[1] - now

    async def release(self, releases: Sequence[Release]) -> None:
        """Give back reserved attempts; see ``release.lua`` for the rules."""
        now = self._now_us()
        for key, member, count in releases:  # count: attempts to give back, 0 = all
            if member is None:  # a plain counter
                held = self._get(key, now)
                if count == 0:
                    self._data.pop(key, None)
                elif held:
                    self._data[key][0] = max(held - count, 0)
                continue
            entry = self._tally(key, now)
            if entry is None:
                continue
            counts = entry[0]
            held = counts.get(member, 0)
            taken = held if count == 0 else min(count, held)
            if held - taken > 0:
                counts[member] = held - taken
            else:
                counts.pop(member, None)
            counts[TALLY_TOTAL] -= taken
            if counts[TALLY_TOTAL] <= 0:
                del self._tallies[key]

    async def record_failure(self, failure: Failure) -> BanState:
        """Count one failure and ban at the limit; see ``fail.lua`` for the rules."""
        validate_failure(failure)
        now = self._now_us()
        if failure.pending_key is not None:  # the reservation becomes this failure
            held = self._get(failure.pending_key, now)
            if held:
                self._data[failure.pending_key][0] = held - 1
        count = (self._get(failure.fail_key, now) or 0) + 1
        left_us = self._ttl_us(failure.fail_key, now)
        if left_us < 0:
            left_us = failure.window_ms * 1000
        self._set(failure.fail_key, count, now + left_us, now)  # never extends the window
        if count < failure.limit:
            return BanState(False, count, 0)
        if count > failure.limit:
            ban_left = self._ttl_us(failure.ban_key, now)
            if ban_left > 0:
                return BanState(True, count, _cdiv(ban_left, 1000))
        ban_ms = _cdiv(left_us, 1000)
        if failure.offence_key is not None:
            offences = (self._get(failure.offence_key, now) or 0) + 1
            self._set(failure.offence_key, offences, now + failure.max_ban_ms * 1000, now)
            ban_ms = min(failure.window_ms * 2 ** (offences - 1), failure.max_ban_ms)
        self._set(failure.ban_key, 1, now + ban_ms * 1000, now)
        return BanState(True, count, ban_ms)

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._data.pop(key, None)
            self._tallies.pop(key, None)

    async def delete_matching(self, pattern: str) -> int:
        """Delete keys matching a glob (``fnmatch`` rules, close to Redis ``MATCH``)."""
        now = self._now_us()
        deleted = 0
        for data in (self._data, self._tallies):
            doomed = [k for k, e in data.items() if e[1] > now and fnmatch.fnmatchcase(k, pattern)]
            for key in doomed:
                del data[key]
            deleted += len(doomed)
        return deleted

    async def close(self) -> None:
        """Nothing to release; counters survive (the process is the store)."""

    async def ping(self) -> None:
        """Always up."""

    def __len__(self) -> int:
        return len(self._data) + len(self._tallies)


class MemoryCacheStore(CacheStore):
    """A byte cache with whole-second TTLs, same rules as :class:`MemcachedCacheStore`.

    Keys are checked like memcached keys (``ValueError`` for a bad one); values over
    ``max_item_bytes`` are skipped (``set`` returns False). ``incr`` keeps counters as
    ASCII digits, as memcached does, so ``get`` reads them back the same way.

    Args:
        clock: seconds as a float (``time.monotonic`` by default); tests inject one.
        max_item_bytes: largest value stored (memcached's default item size).
        max_entries, max_bytes: bounds on the whole cache; the oldest go first.
    """

    kind = "memory"

    def __init__(
        self,
        clock: Clock = time.monotonic,
        max_item_bytes: int = 1024 * 1024,
        *,
        max_entries: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._clock = clock
        self.max_item_bytes = max_item_bytes
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._data: dict[bytes, tuple[bytes, float]] = {}  # key -> (value, expires_at)
        self._bytes = 0
        self._writes = 0
        #: number of ``get`` calls, like ``MemcachedCacheStore.gets``.
        self.gets = 0

    def _expiry(self, ttl: int) -> float:
        if ttl < 0:
            raise ValueError(f"cache ttl must be >= 0 seconds, got {ttl!r}")
        return self._clock() + ttl if ttl else _NEVER

    def _live(self, key: bytes) -> tuple[bytes, float] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] <= self._clock():
            self._drop(key)
            return None
        return entry

    def _drop(self, key: bytes) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self._bytes -= len(entry[0])
        return True

    def _store(self, key: bytes, value: bytes, expires_at: float) -> None:
        self._drop(key)
        self._data[key] = (value, expires_at)
        self._bytes += len(value)
        self._writes += 1
        if (
            self._writes >= _SWEEP_EVERY
            or len(self._data) > self._max_entries
            or self._bytes > self._max_bytes
        ):
            self._sweep()

    def _sweep(self) -> None:
        self._writes = 0
        now = self._clock()
        for key in [k for k, e in self._data.items() if e[1] <= now]:
            self._drop(key)
        while self._data and (len(self._data) > self._max_entries or self._bytes > self._max_bytes):
            self._drop(next(iter(self._data)))

    async def get(self, key: bytes) -> bytes | None:
        check_cache_key(key)
        self.gets += 1
        entry = self._live(key)
        return None if entry is None else entry[0]

    async def set(self, key: bytes, value: bytes, ttl: int) -> bool:
        check_cache_key(key)
        expires_at = self._expiry(ttl)
        if len(value) > self.max_item_bytes:
            return False
        self._store(key, bytes(value), expires_at)
        return True

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        check_cache_key(key)
        expires_at = self._expiry(ttl)
        if len(value) > self.max_item_bytes or self._live(key) is not None:
            return False
        self._store(key, bytes(value), expires_at)
        return True

    async def delete(self, key: bytes) -> bool:
        check_cache_key(key)
        return self._live(key) is not None and self._drop(key)

    async def incr(self, key: bytes, ttl: int = 0) -> int:
        """Add one; a missing counter starts at 1 with ``ttl`` (an existing one keeps its TTL)."""
        check_cache_key(key)
        expires_at = self._expiry(ttl)
        entry = self._live(key)
        if entry is None:
            self._store(key, b"1", expires_at)
            return 1
        if not entry[0].isdigit():
            raise StoreError(f"cannot increment non-numeric value of {key!r}")
        value = int(entry[0]) + 1
        self._store(key, str(value).encode(), entry[1])
        return value

    async def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    async def close(self) -> None:
        """Nothing to release; entries survive (the process is the store)."""

    async def ping(self) -> None:
        """Always up."""

    def __len__(self) -> int:
        return len(self._data)
