"""``@protected`` inside the pipeline: its keys before the view, its accounting after it.

Before the view (in the pipeline's single store call) each ``@protected`` either
checks its client's ban and guards the client's attempts in flight (:class:`Ban`,
:class:`InFlight`), or, with ``key=``, reserves the attempt in two tallies
(:class:`Attempt`): the client's and the key's. After the view, :func:`settle`
counts a failure status or gives the reservation back. A ban answers with its block
status: 404 is werkzeug's own ``NotFound`` (the app renders it as any unknown path),
other statuses are :class:`~quart_api.guards._responses.Blocked`.

Attempts in flight of a plain ``@protected``: its failure is known only after the
view ran, so without care 50 concurrent guesses would all reach the view before the
first failure is counted. The check therefore reserves the attempt whenever the
client already has failures, or this process already runs one of its attempts, and
counts that attempt among those that could fail: the view never runs more than
``limit`` times, in one process, under any concurrency. Only a client's first attempt
in each process goes unreserved (so across ``W`` processes its very first burst can
reach ``limit + W - 1`` views), and only a reserved success costs a second call, to
give its reservation back: a client with no failures that calls one at a time costs
one call per request, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from werkzeug.exceptions import HTTPException, NotFound

from quart_api.guards import _metrics
from quart_api.guards._decorators import ProtectSpec
from quart_api.guards._identity import typed_key
from quart_api.guards._responses import Blocked, Policy, ban_headers, seconds_up
from quart_api.guards._state import GuardsState, RequestFacts, invoke, store_op
from quart_api.guards.stores.base import (
    BanCheck,
    BanState,
    CheckResult,
    Failure,
    Release,
    Tally,
)

__all__ = [
    "UNROUTED_BLOCK",
    "Attempt",
    "Ban",
    "InFlight",
    "Protect",
    "UnroutedBlock",
    "attempt",
    "first_ban",
    "settle",
]

_HeaderList = Sequence[tuple[str, str]]


class Ban:
    """The key prefixes of one failure count, its ban and its reservations.

    Each is ``<prefix>{<client key>}``: one client's keys share a hash tag.
    """

    __slots__ = ("ban_key", "fail_key", "offence_key", "pending_key")

    def __init__(self, scope: str, key_prefix: str) -> None:
        self.fail_key = f"{key_prefix}:f:{scope}:{{"
        self.ban_key = f"{key_prefix}:b:{scope}:{{"
        self.offence_key = f"{key_prefix}:o:{scope}:{{"
        self.pending_key = f"{key_prefix}:p:{scope}:{{"


class Protect:
    """One ``@protected`` of an endpoint, with its keys and block answer resolved.

    Without ``key``: a failure counter and a ban key per client (:class:`Ban`). With
    ``key``: two tallies per attempt, ``<prefix>:t:<scope>:{i:...}`` (the client's,
    one field per key it tried) and ``<prefix>:t:<scope>:{k:...}`` (the key's, one
    field per client that tried it).
    """

    __slots__ = ("ban", "policy", "spec", "tally_key")

    def __init__(self, spec: ProtectSpec, endpoint: str, key_prefix: str) -> None:
        self.spec = spec
        scope = endpoint if spec.scope is None else spec.scope
        self.ban = None if spec.key is not None else Ban(scope, key_prefix)
        self.tally_key = f"{key_prefix}:t:{scope}:{{"
        name = "failures" if spec.scope is None else f"{spec.scope}-failures"
        #: the ``RateLimit-Policy`` of a 429 block: ``limit`` failures per window
        self.policy = Policy(name, spec.limit, max(1, spec.window_ms // 1000), "failures")

    def blocked(self, retry_ms: int, limit_headers: _HeaderList) -> HTTPException:
        """The block answer; 404 is werkzeug's own, for the app to render as any 404."""
        status = self.spec.block_status
        if status == 404:
            return NotFound()
        retry = max(1, seconds_up(retry_ms))
        headers = ban_headers(self.policy, retry, limit_headers) if status == 429 else []
        return Blocked(status, retry, self.spec.block_detail, headers)

    def ban_check(
        self, client: str, state: GuardsState, reserve: bool
    ) -> tuple[BanCheck, InFlight]:
        """The check of this ``@protected`` (without ``key``) for ``client``, and its
        bookkeeping of the attempts in flight in this process (``reserve=False``: a
        websocket handshake, which has no outcome to settle, only reads)."""
        keys = self.ban
        if keys is None:  # pragma: no cover - only called for protects without key
            raise TypeError("a keyed @protected has no ban check")
        fail_key = f"{keys.fail_key}{client}}}"
        ban_key = f"{keys.ban_key}{client}}}"
        if not reserve:
            return BanCheck(fail_key, ban_key), InFlight(state, fail_key, False)
        here = state.attempts_in_flight.get(fail_key, 0)
        in_flight = InFlight(state, fail_key, here == 0)
        check = BanCheck(
            fail_key,
            ban_key,
            f"{keys.pending_key}{client}}}",
            self.spec.limit,
            self.spec.window_ms,
            here,
        )
        return check, in_flight


class InFlight:
    """This process's count of a client's unreserved attempts in flight, for one ``Ban``.

    An attempt sent while none runs here counts itself at once (before the store
    answers), so every concurrent attempt that follows in this process is checked
    with it in mind and reserves. ``done()`` uncounts it, after its failure (if any)
    is recorded: a later check then sees the attempt either running or failed.
    """

    __slots__ = ("counted", "fail_key", "state")

    def __init__(self, state: GuardsState, fail_key: str, count: bool) -> None:
        self.state = state
        self.fail_key = fail_key
        self.counted = count
        if count:
            state.attempts_in_flight[fail_key] = state.attempts_in_flight.get(fail_key, 0) + 1

    def done(self) -> None:
        """Uncount the attempt (idempotent)."""
        if not self.counted:
            return
        self.counted = False
        counts = self.state.attempts_in_flight
        left = counts.get(self.fail_key, 0) - 1
        if left > 0:
            counts[self.fail_key] = left
        else:
            counts.pop(self.fail_key, None)


class UnroutedBlock:
    """The block of ``protect_unrouted``: a 404, like the unknown paths that earned it."""

    __slots__ = ()

    def blocked(self, retry_ms: int, limit_headers: _HeaderList) -> HTTPException:
        return NotFound()


UNROUTED_BLOCK = UnroutedBlock()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One ``@protected(key=...)`` attempt: reserved before the view, settled after it.

    ``tallies``: the client's tally (none for a safelisted client), then (when a key
    was named) the key's.
    """

    protect: Protect
    tallies: tuple[Tally, ...]

    def releases(self, count: int) -> list[Release]:
        """Give back ``count`` attempts (0: all) of this client on this key."""
        return [Release(t.key, t.member, count) for t in self.tallies if t.member is not None]


async def attempt(
    protect: Protect, ctx: RequestFacts, reserve: bool, safelisted: bool = False
) -> Attempt:
    """The two tallies of one ``@protected(key=...)`` attempt (one when no key is named).

    ``reserve=False`` (a websocket handshake, which has no status to settle with)
    only reads them. A ``safelisted`` client has no tally of its own (its network is
    trusted), but the key's tally still counts it: the key (an account) is protected
    from every network, so a host inside a safelisted range cannot guess a password
    uncounted.
    """
    key = protect.spec.key
    ident = None if key is None else await invoke(key)
    client = ctx.client_key()
    subject = None if ident is None or ident == "" else typed_key("k", str(ident))
    spec = protect.spec
    tallies = []
    if not safelisted:  # the client's tally: one field per key it tried ("-": no key named)
        tallies.append(
            Tally(f"{protect.tally_key}{client}}}", subject or "-", spec.limit, spec.window_ms)
        )
    if subject is not None:  # the key's tally: one field per client that tried it
        tallies.append(Tally(f"{protect.tally_key}{subject}}}", client, spec.limit, spec.window_ms))
    if not reserve:
        tallies = [t._replace(member=None) for t in tallies]
    return Attempt(protect, tuple(tallies))


def first_ban(
    owners: Sequence[Protect | UnroutedBlock], attempts: Sequence[Attempt], result: CheckResult
) -> tuple[Protect | UnroutedBlock, int]:
    """Whose ban refuses the request (``owners`` answer ``result.bans`` in order), and
    for how long (ms)."""
    for owner, ban in zip(owners, result.bans, strict=True):
        if ban.banned:
            return owner, ban.retry_after_ms
    states = iter(result.tallies)
    for pending in attempts:
        mine: list[BanState] = [next(states) for _ in pending.tallies]
        if any(t.banned for t in mine):
            return pending.protect, max(t.retry_after_ms for t in mine if t.banned)
    raise RuntimeError("result.banned without a ban")  # pragma: no cover


async def settle(
    state: GuardsState,
    checks: Sequence[tuple[Protect, BanCheck]],
    result: CheckResult,
    attempts: Sequence[Attempt],
    status: int,
) -> None:
    """After the view: count a failure ``status``, or give reservations back on success.

    ``checks`` are the endpoint's ``@protected`` without ``key`` and their checks,
    answered by ``result.bans`` in order. A reserved attempt's reservation becomes the
    failure, or is given back; a tally's is kept for a failure status and given back
    otherwise (all of this client's on this key after a success with
    ``reset_on_success``). Everything given back goes in one call.
    """
    releases: list[Release] = []
    success = 200 <= status < 300
    for pending in attempts:
        spec = pending.protect.spec
        if status in spec.statuses:
            _metrics.PROTECT_FAILURES.inc()
            continue
        releases += pending.releases(0 if spec.reset_on_success and success else 1)
    failures: list[Failure] = []
    for (protect, check), ban in zip(checks, result.bans, strict=False):
        spec = protect.spec
        if status in spec.statuses:
            _metrics.PROTECT_FAILURES.inc()
            keys = protect.ban
            offence = None
            if spec.escalate and keys is not None:
                offence = keys.offence_key + check.fail_key[len(keys.fail_key) :]
            failures.append(
                Failure(
                    fail_key=check.fail_key,
                    ban_key=check.ban_key,
                    limit=spec.limit,
                    window_ms=spec.window_ms,
                    offence_key=offence,
                    max_ban_ms=spec.max_ban_ms,
                    pending_key=check.pending_key if ban.reserved else None,
                )
            )
            continue
        if ban.reserved and check.pending_key is not None:
            releases.append(Release(check.pending_key, None, 1))
        if spec.reset_on_success and success and ban.failures > 0:
            releases.append(Release(check.fail_key, None, 0))
    if releases:
        await store_op(state.counter_breaker, state.counters.release(releases))
    for failure in failures:
        await store_op(state.counter_breaker, state.counters.record_failure(failure))
