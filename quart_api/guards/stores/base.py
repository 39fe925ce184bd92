"""The store interfaces the guards are written against.

Two needs, two interfaces, so each backend says plainly what it can do:

- :class:`CounterStore` keeps rate-limit and failure counters. Capability:
  atomic check-and-charge of several limits at once (all-or-nothing), failure
  counters with bans, and failure tallies (one hash per client and per key, see
  :class:`Tally`) read and reserved in the same step.
  Backends: memory (one process), Redis (one Lua script, one round trip).
- :class:`CacheStore` keeps response-cache bytes with a TTL. Capability:
  get / set / add (only-if-absent, used as a cross-process lock) / delete /
  incr (generation counters). Backends: memory (one process), memcached.

Stores take explicit arguments (keys, limits, windows) and never touch
``request`` or ``current_app``: that is what makes them testable alone.
Every backend error, timeouts included, surfaces as :class:`StoreError`;
nothing else may escape a store call (the guards fail open on that one type).

The values a request builds on its way through (limits, their answers, ban checks)
are named tuples: immutable like frozen dataclasses, and cheaper to make, which counts
on the path every guarded request takes.

Units: durations are integer milliseconds inside the counter interface
(matching Redis ``PEXPIRE`` and ``TIME``), whole seconds for cache TTLs
(matching memcached ``exptime``).
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import ClassVar, NamedTuple

from quart_api.guards.config import REDIS_MAX_CONNECTIONS, STORE_TIMEOUT
from quart_api.guards.errors import ConfigurationError

__all__ = [
    "TALLY_TOTAL",
    "BanCheck",
    "BanState",
    "CacheStore",
    "CheckResult",
    "CounterStore",
    "ErrorMap",
    "Failure",
    "Limit",
    "LimitState",
    "Release",
    "Store",
    "StoreError",
    "StoreTimeout",
    "Tally",
    "check_cache_key",
    "gcra_costs",
    "make_tuple",
    "validate_ban_check",
    "validate_failure",
    "validate_tally",
]


class StoreError(Exception):
    """A store could not answer (down, refused, protocol error, timeout)."""


class StoreTimeout(StoreError):
    """A store call took longer than its timeout.

    ``loop_late``: the reply had arrived but the event loop had not read it in time
    (a busy worker, not a slow store); the breaker does not hold that against the store.
    """

    loop_late: bool = False


class Limit(NamedTuple):
    """One GCRA limit to check and charge.

    ``limit`` requests per ``window_ms``: a client may burst ``limit`` at once,
    then earns one request back every ``window_ms / limit``. A client that keeps
    under ``limit / window`` on average is never refused, however long it calls.
    ``dry_run`` limits are computed and reported but never refuse the request.
    """

    key: str
    limit: int
    window_ms: int
    cost: int = 1
    dry_run: bool = False


class LimitState(NamedTuple):
    """What a limit said about one request.

    ``remaining``: requests of cost 1 still allowed right now (after this one).
    ``reset_ms``: until the quota is whole again. ``retry_after_ms``: until a
    request of this cost would be allowed (0 when this one was allowed).
    """

    allowed: bool
    remaining: int
    reset_ms: int
    retry_after_ms: int


#: ``make_tuple(Limit, (key, limit, window_ms, cost, dry_run))``: a NamedTuple built from
#: all its fields at once, in C, for the hot path (``Limit(...)`` runs a Python ``__new__``)
make_tuple = tuple.__new__


class BanCheck(NamedTuple):
    """Is this client banned from this endpoint? Read before the view runs.

    With ``pending_key`` (a plain ``@protected``: one failure count per client) the
    check also guards the attempts in flight, so concurrent failures can never run
    the view more than ``limit`` times:

    - ``in_flight_here``: this process's attempts of the client that are running
      without a reservation (at most one when every process follows this rule);
    - the check refuses (a ban with ``retry_after_ms`` of one second) while
      ``failures + reserved attempts + in_flight_here >= limit``;
    - otherwise, when the whole check is allowed and the client already has failures
      or ``in_flight_here > 0``, one attempt is reserved (``pending_key`` goes up by
      one; its TTL is ``window_ms``, renewed by each reservation). A failure turns
      the reservation into a failure (:class:`Failure` with ``reserved``), a success
      gives it back (:class:`Release` of ``pending_key``). A client with no failures
      and nothing in flight reserves nothing: its success costs no second call.
    """

    fail_key: str
    ban_key: str
    pending_key: str | None = None
    limit: int = 0
    window_ms: int = 0
    in_flight_here: int = 0


class BanState(NamedTuple):
    """``failures``: failures counted in the current window (0 when none).

    ``reserved``: the check reserved one attempt (see :class:`BanCheck`).
    """

    banned: bool
    failures: int
    retry_after_ms: int
    reserved: bool = False


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure to record after a view answered with a failure status.

    The failure counter's TTL is set by the first failure of a window only
    (never extended), so a window always ends. When the count reaches ``limit``
    the ban key is set for the rest of the window; with ``offence_key`` set,
    each repeat offence doubles the ban (the n-th offence bans for
    ``window_ms * 2**(n - 1)``), capped at ``max_ban_ms``, and the offence count
    lives for ``max_ban_ms``. With ``pending_key`` the failure is an attempt that
    the check reserved: the reservation is given back as the failure is counted.
    """

    fail_key: str
    ban_key: str
    limit: int
    window_ms: int
    offence_key: str | None = None
    max_ban_ms: int = 0
    pending_key: str | None = None


class Tally(NamedTuple):
    """A failure tally checked before the view: a hash of ``member -> count`` plus a total.

    ``@protected(key=...)`` keeps two per attempt: the client's (members: the keys it
    tried, e.g. accounts) and the key's (members: the clients that tried it). The
    check refuses while the total is ``>= limit``. Otherwise, when the whole check is
    allowed and ``member`` is set, one attempt is reserved: the member's count and the
    total go up by one, atomically with the check, so concurrent attempts can never
    exceed ``limit``. The view's outcome then keeps it (a failure) or gives it back
    (:class:`Release`). The first reservation creates the tally with a TTL of
    ``window_ms``, never extended, so a window always ends. ``member=None`` only reads.
    """

    key: str
    member: str | None
    limit: int
    window_ms: int


class Release(NamedTuple):
    """Give back ``attempts`` reserved attempts of ``member`` in the tally ``key``.

    ``attempts=0`` gives back all of them (a success clearing its own pair). The
    total goes down by what was taken; a tally whose total reaches 0 is deleted.
    ``member=None``: ``key`` is a plain counter (a :class:`BanCheck`'s ``pending_key``
    or ``fail_key``), lowered by ``attempts`` but never below zero, or deleted when
    ``attempts`` is 0.
    """

    key: str
    member: str | None
    attempts: int = 1


class CheckResult(NamedTuple):
    """All limits, bans and tallies of one request, in the order they were asked.

    ``allowed`` is False when a limit that is not a dry run refused the request,
    a ban applies or a tally is at its limit; in that case nothing was charged or
    reserved. A tally's state is a :class:`BanState` whose ``failures`` is its total.
    """

    allowed: bool
    limits: tuple[LimitState, ...]
    bans: tuple[BanState, ...]
    tallies: tuple[BanState, ...] = ()

    @property
    def banned(self) -> bool:
        return any(b.banned for b in self.bans) or any(t.banned for t in self.tallies)


class Store(abc.ABC):
    """Lifecycle shared by every store: lazy open, explicit close, health."""

    #: Human name used in logs, metrics and ``/readyz`` ("redis", "memcached", "memory").
    kind: str = "store"

    async def open(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Connect eagerly (optional: every call connects lazily on first use)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store may be used again afterwards (reconnects)."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the backend answers."""


class CounterStore(Store):
    """Rate-limit and failure counters.

    A backend that is chosen by URL (``REDIS_URL``) names its ``schemes`` and
    implements :meth:`check_url` and :meth:`from_url`; listing the class in
    ``stores.registry`` is then all it takes for ``Guards`` to use it.
    """

    #: The URL schemes this backend takes (``"redis"``, ``"redis+sentinel"``, ...).
    schemes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_url(cls, url: str) -> None:
        """Raise :class:`~quart_api.guards.ConfigurationError` (password hidden) unless
        this backend can use ``url``. Connects to nothing."""
        raise ConfigurationError(f"{cls.__name__} is not chosen by URL")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = STORE_TIMEOUT,
        key_prefix: str = "",
        max_connections: int = REDIS_MAX_CONNECTIONS,
        batch: bool = True,
    ) -> CounterStore:
        """A store for ``url`` (checked by :meth:`check_url`); no connection is opened.

        Args:
            timeout: bound in seconds on one call (``STORE_TIMEOUT``).
            key_prefix: prepended to every key.
            max_connections: connections per server and process.
            batch: pipeline the calls of one event-loop tick into one round trip.
        """
        raise ConfigurationError(f"{cls.__name__} is not chosen by URL")

    @abc.abstractmethod
    async def check(
        self, limits: Sequence[Limit], bans: Sequence[BanCheck], tallies: Sequence[Tally] = ()
    ) -> CheckResult:
        """Check and charge ``limits``, read ``bans`` and ``tallies``: one atomic step.

        One round trip on a server.

        All-or-nothing: when any non-dry-run limit refuses, any ban applies or any
        tally is at its limit, nothing is charged or reserved. Otherwise every limit
        is charged its cost, every tally with a member reserves one attempt, and so
        does every ban check with a ``pending_key`` whose client has failures or
        attempts in flight (see :class:`BanCheck`).
        """

    @abc.abstractmethod
    async def release(self, releases: Sequence[Release]) -> None:
        """Give back reserved attempts, or clear counters (one round trip; see :class:`Release`)."""

    @abc.abstractmethod
    async def record_failure(self, failure: Failure) -> BanState:
        """Count one failure; ban when the count reaches the limit (one round trip)."""

    @abc.abstractmethod
    async def delete(self, keys: Sequence[str]) -> None:
        """Forget these keys (``reset_on_success``, ``unban``)."""

    @abc.abstractmethod
    async def delete_matching(self, pattern: str) -> int:
        """Delete every key matching a glob ``pattern``; returns how many (admin use)."""


class CacheStore(Store):
    """Response-cache bytes with a TTL in whole seconds (0 = no expiry)."""

    #: Values larger than this are not stored (memcached's default item size).
    max_item_bytes: int = 1024 * 1024

    @abc.abstractmethod
    async def get(self, key: bytes) -> bytes | None: ...

    def get_soon(self, key: bytes) -> asyncio.Future[bytes | None] | None:
        """Start ``get(key)`` now, for a caller that overlaps it with another store's
        round trip; None when starting early gains nothing (this default: a store in
        the process, or one without its own batching, is simply awaited later)."""
        return None

    @abc.abstractmethod
    async def set(self, key: bytes, value: bytes, ttl: int) -> bool:
        """Store; False when the value is too large (skipped, never an error)."""

    @abc.abstractmethod
    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        """Store only if absent; True when this call created it (a lock)."""

    @abc.abstractmethod
    async def delete(self, key: bytes) -> bool: ...

    @abc.abstractmethod
    async def incr(self, key: bytes, ttl: int = 0) -> int:
        """Increment a counter, creating it at 1 when missing."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget everything (``guards.reset()`` in a user's tests)."""


# --- helpers shared by the backends (one definition of each rule) -----------------


@lru_cache(maxsize=1024)
def gcra_costs(limit: int, window_ms: int, cost: int) -> tuple[int, int, int]:
    """``(window_us, interval_us, cost_us)`` of a GCRA limit: whole microseconds, exact.

    The emission interval ``T = window / limit`` is rounded UP to a whole microsecond
    and the window taken as ``limit * T`` (at most ``limit`` microseconds longer).
    Then all the arithmetic is in integers: a request fits when
    ``debt + cost_us <= window_us`` and adds ``cost_us = cost * T`` to the debt, so
    ``limit`` requests at once all fit and the ``limit + 1``-th never does, for any
    limit; the rate is never above the nominal one (by rounding it is at most one
    microsecond per request below it). Both backends use these numbers, so they agree
    to the microsecond. Cached: parameters repeat, keys vary. Raises ``ValueError``
    for a limit that could never admit anything.
    """
    if limit < 1 or window_ms < 1 or cost < 0 or cost > limit:
        raise ValueError(
            f"bad limit: limit={limit!r}, window_ms={window_ms!r}, cost={cost!r} "
            "(need limit >= 1, window_ms >= 1, 0 <= cost <= limit)"
        )
    interval_us = -(-window_ms * 1000 // limit)
    return limit * interval_us, interval_us, cost * interval_us


def validate_tally(tally: Tally) -> None:
    """Raise ``ValueError`` for a :class:`Tally` no backend could apply."""
    if tally.limit < 1 or tally.window_ms < 1:
        raise ValueError(f"bad tally: {tally!r} (need limit >= 1, window_ms >= 1)")
    if tally.member is not None and (not tally.member or tally.member == TALLY_TOTAL):
        raise ValueError(f"bad tally member: {tally!r} (empty, or the total's own field)")


#: The field of a tally that holds its total (members are typed keys: never this).
TALLY_TOTAL = "total"


def validate_ban_check(ban: BanCheck) -> None:
    """Raise ``ValueError`` for a :class:`BanCheck` no backend could apply."""
    if ban.pending_key is not None and (ban.limit < 1 or ban.window_ms < 1):
        raise ValueError(f"bad ban check: {ban!r} (need limit >= 1, window_ms >= 1)")
    if ban.in_flight_here < 0:
        raise ValueError(f"bad ban check: {ban!r} (in_flight_here < 0)")


def validate_failure(failure: Failure) -> None:
    """Raise ``ValueError`` for a :class:`Failure` no backend could apply."""
    if failure.limit < 1 or failure.window_ms < 1:
        raise ValueError(f"bad failure limit: {failure!r} (need limit >= 1, window_ms >= 1)")
    if failure.offence_key is not None and failure.max_ban_ms < failure.window_ms:
        raise ValueError(f"bad failure escalation: {failure!r} (need max_ban_ms >= window_ms)")


# memcached's rule: 1-250 bytes, no whitespace or control characters. aiomcache checks
# characters of the decoded key (with Unicode's idea of whitespace), so a key must pass
# both: ASCII keys take the fast path, others are decoded and checked like aiomcache.
_ASCII_KEY = re.compile(rb"[\x21-\x7e]{1,250}")
_UNICODE_KEY = re.compile("[^\\s\x00-\x1f\x7f-\x9f]+")


def check_cache_key(key: bytes) -> None:
    """Raise ``ValueError`` unless ``key`` is a valid memcached key (checked in bytes).

    A bad key is a programming error, not a store failure, so it is never a
    :class:`StoreError`. The memory cache applies the same rule, so code that works
    on the embedded default also works on memcached.
    """
    if type(key) is bytes and _ASCII_KEY.fullmatch(key):
        return
    if not isinstance(key, bytes):
        raise ValueError(f"cache key must be bytes, got {type(key).__name__}")
    if len(key) > 250 or not key:
        raise ValueError(f"cache key is {len(key)} bytes; memcached allows 1 to 250: {key[:60]!r}")
    try:
        text = key.decode()
    except UnicodeDecodeError:
        raise ValueError(f"cache key is not UTF-8: {key[:60]!r}") from None
    if not _UNICODE_KEY.fullmatch(text):
        raise ValueError(f"cache key has whitespace or control characters: {key[:60]!r}")


class ErrorMap:
    """A backend's one choke point from client errors to :class:`StoreError`.

    Used as a context manager around every client call (``with errors:``) and as a
    function for errors that come back as values (a pipelined reply). Timeouts
    (the builtin ``TimeoutError`` that ``asyncio.timeout`` raises, plus the client's
    own ``timeouts``) become :class:`StoreTimeout`; every other class in ``errors``
    becomes :class:`StoreError`; anything else (a bug) passes through unchanged.
    """

    __slots__ = ("errors", "name", "timeouts")

    def __init__(
        self,
        name: str,
        errors: tuple[type[BaseException], ...],
        timeouts: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.name = name
        self.errors = errors
        self.timeouts: tuple[type[BaseException], ...] = (TimeoutError, *timeouts)

    def convert(self, exc: BaseException) -> BaseException:
        """The :class:`StoreError` for ``exc``, or ``exc`` itself when it is not a client error."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, self.timeouts):  # before `errors`: TimeoutError is an OSError
            err: StoreError = StoreTimeout(f"{self.name} timed out: {type(exc).__name__} {exc}")
        elif isinstance(exc, self.errors):
            err = StoreError(f"{self.name} failed: {type(exc).__name__} {exc}")
        else:
            return exc
        err.__cause__ = exc
        return err

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            mapped = self.convert(exc)
            if mapped is not exc:
                raise mapped
