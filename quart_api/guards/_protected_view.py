"""The ``@protected`` flow of a guarded view: bans and tallies before, failures after.

Before the view (in the runner's single store call) each ``@protected`` either reads
its client's ban (:class:`Ban`) or, with ``key=``, reserves the attempt in two
tallies (:class:`Attempt`): the client's and the key's. After the view, :func:`settle`
counts a failure status or clears on success. A ban answers with its block status:
404 is werkzeug's own ``NotFound`` (the app renders it as any unknown path), other
statuses are :class:`~quart_api.guards._responses.Blocked`.
"""

from __future__ import annotations

from collections.abc import Sequence

from werkzeug.exceptions import HTTPException, NotFound

from quart_api.guards import _metrics
from quart_api.guards._context import RequestFacts, invoke, store_op
from quart_api.guards._extension import GuardsState
from quart_api.guards._identity import typed_key
from quart_api.guards._responses import Blocked, Policy, ban_headers, seconds_up
from quart_api.guards._specs import ProtectSpec
from quart_api.guards.stores.base import BanState, CheckResult, Failure, Release, Tally

__all__ = [
    "UNROUTED_BLOCK",
    "Attempt",
    "Ban",
    "Protect",
    "UnroutedBlock",
    "attempt",
    "first_ban",
    "settle",
]

_HeaderList = Sequence[tuple[str, str]]


class Ban:
    """The key prefixes of one failure count and its ban (``<prefix>{i:1.2.3.4}``)."""

    __slots__ = ("ban_key", "fail_key", "offence_key")

    def __init__(self, scope: str, key_prefix: str) -> None:
        self.fail_key = f"{key_prefix}:f:{scope}:{{"
        self.ban_key = f"{key_prefix}:b:{scope}:{{"
        self.offence_key = f"{key_prefix}:o:{scope}:{{"


class Protect:
    """One ``@protected`` of an endpoint, with its keys and block answer resolved.

    Without ``key``: a failure counter and a ban key per client (``Ban``). With
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
        self.policy = Policy(name, spec.limit, max(1, spec.window_ms // 1000))

    def blocked(self, retry_ms: int, limit_headers: _HeaderList) -> HTTPException:
        """The block answer; 404 is werkzeug's own, for the app to render as any 404."""
        status = self.spec.block_status
        if status == 404:
            return NotFound()
        retry = max(1, seconds_up(retry_ms))
        headers = ban_headers(self.policy, retry, limit_headers) if status == 429 else []
        return Blocked(status, retry, self.spec.block_detail, headers)


class UnroutedBlock:
    """The block of ``protect_unrouted``: a 404, like the unknown paths that earned it."""

    __slots__ = ()

    def blocked(self, retry_ms: int, limit_headers: _HeaderList) -> HTTPException:
        return NotFound()


UNROUTED_BLOCK = UnroutedBlock()


class Attempt:
    """One ``@protected(key=...)`` attempt: reserved before the view, settled after it."""

    __slots__ = ("protect", "tallies")

    def __init__(self, protect: Protect, tallies: tuple[Tally, ...]) -> None:
        self.protect = protect
        #: the client's tally, then (when a key was named) the key's
        self.tallies = tallies

    def releases(self, count: int) -> list[Release]:
        """Give back ``count`` attempts (0: all) of this client on this key."""
        return [Release(t.key, t.member, count) for t in self.tallies if t.member is not None]


async def attempt(protect: Protect, ctx: RequestFacts, reserve: bool) -> Attempt:
    """The two tallies of one ``@protected(key=...)`` attempt (one when no key is named).

    ``reserve=False`` (a websocket handshake, which has no status to settle with)
    only reads them.
    """
    key = protect.spec.key
    ident = None if key is None else await invoke(key)
    client = ctx.client_key()
    subject = None if ident is None or ident == "" else typed_key("k", str(ident))
    spec = protect.spec
    # The client's tally: one field per key it tried ("-": no key named).
    tallies = [Tally(f"{protect.tally_key}{client}}}", subject or "-", spec.limit, spec.window_ms)]
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
    raise AssertionError("result.banned without a ban")  # pragma: no cover


async def settle(
    state: GuardsState,
    ctx: RequestFacts,
    protects: Sequence[Protect],
    bans: Sequence[Ban],
    result: CheckResult,
    attempts: Sequence[Attempt],
    status: int,
) -> None:
    """After the view: count a failure ``status``, or clear failures on success.

    ``protects`` are the endpoint's ``@protected`` without ``key``, answered by
    ``result.bans`` and keyed by ``bans`` in order. An attempt's reservation is kept
    for a failure status and given back otherwise: all of this client's on this key
    after a success with ``reset_on_success`` (one call for every tally).
    """
    releases: list[Release] = []
    for pending in attempts:
        spec = pending.protect.spec
        if status in spec.statuses:
            _metrics.PROTECT_FAILURES.inc()
            continue
        releases += pending.releases(0 if spec.reset_on_success and 200 <= status < 300 else 1)
    if releases:
        await store_op(state, state.counter_breaker, state.counters.release(releases))
    if not protects:
        return
    ip = ctx.client_key()
    for index, (protect, keys) in enumerate(zip(protects, bans, strict=False)):
        spec = protect.spec
        fail_key = f"{keys.fail_key}{ip}}}"
        if status in spec.statuses:
            _metrics.PROTECT_FAILURES.inc()
            failure = Failure(
                fail_key=fail_key,
                ban_key=f"{keys.ban_key}{ip}}}",
                limit=spec.limit,
                window_ms=spec.window_ms,
                offence_key=f"{keys.offence_key}{ip}}}" if spec.escalate else None,
                max_ban_ms=spec.max_ban_ms,
            )
            await store_op(state, state.counter_breaker, state.counters.record_failure(failure))
        elif spec.reset_on_success and 200 <= status < 300 and result.bans[index].failures > 0:
            await store_op(state, state.counter_breaker, state.counters.delete([fail_key]))
