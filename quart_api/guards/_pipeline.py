"""The guarded view: every check of one endpoint, always in the same order.

1. Limits and bans: every rate limit (per IP, per user, custom key), every
   ``@protected`` ban check and every ``@protected(key=...)`` tally of the request,
   in ONE store call (one Redis round trip, all-or-nothing; reservations of attempts
   are made in that same call). A banned client gets the block response, a limited
   one 429 (and ``on_breach`` hears of it); neither reaches the view. A safelisted
   client skips this step, except the tallies of the keys it tries (an account's
   lock-out holds against every network).
2. Pre-checks (``requires_scopes`` and other authorization hooks).
3. The cache (``_cache``): a fresh hit is answered here; nothing above was skipped.
   (Its lookup may have been sent with step 1's store call, to share the wait; what
   it found is served only here.)
4. The view; then ``@protected`` settles (``_protect.settle``: a failure is counted,
   a reservation given back) and a cacheable response is stored.

Keys are ``<prefix>:<kind>:<bucket>:...{<typed identity>}``: the identity is typed
(``_identity``), so an address, a user and a custom key can never spell one another,
and it is the hash tag, so one client's keys share a Redis Cluster slot.

Because the order lives here and not in the order decorators were written, a cache
hit can never bypass a limit, a ban or a scope check. What does not vary per request
is worked out once per endpoint, in its plan (``_plan``), when the app starts serving.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from quart import Quart, Response, after_this_request, has_request_context, request, websocket
from quart.typing import ResponseTypes
from werkzeug.exceptions import HTTPException

from quart_api.guards import _metrics
from quart_api.guards._cache import cached_response, drop_lookup, start_lookup
from quart_api.guards._identity import typed_key
from quart_api.guards._plan import Plan
from quart_api.guards._protect import (
    UNROUTED_BLOCK,
    Attempt,
    InFlight,
    Protect,
    UnroutedBlock,
    attempt,
    first_ban,
    settle,
)
from quart_api.guards._responses import (
    Blocked,
    Breach,
    GuardUnavailable,
    Policy,
    PolicySet,
    RateLimitExceeded,
    put_headers,
    rate_limit_headers,
    seconds_up,
)
from quart_api.guards._state import (
    GuardsState,
    RequestFacts,
    in_networks,
    invoke,
    store_op,
    user_key,
)
from quart_api.guards.config import ON_BREACH_TIMEOUT
from quart_api.guards.stores.base import BanCheck, CheckResult, Limit, Tally, make_tuple

__all__ = ["guard_view", "is_guarded"]

_WRAPPED = "__quart_api_guarded__"
_CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
_HeaderList = Sequence[tuple[str, str]]


def is_guarded(view: Callable[..., Any]) -> bool:
    """Whether ``view`` is already a guarded wrapper (installing twice wraps once)."""
    return getattr(view, _WRAPPED, False) is True


# -- the guarded view --------------------------------------------------------------


@dataclass(slots=True)
class _Checked:
    """What the check before the view found out, for the steps after it."""

    result: CheckResult | None = None
    headers: _HeaderList = ()
    attempts: tuple[Attempt, ...] = ()
    #: the plain ``@protected`` of the endpoint with their checks (``result.bans`` order)
    checks: tuple[tuple[Protect, BanCheck], ...] = ()
    in_flight: tuple[InFlight, ...] = ()
    #: whether the view's outcome is counted (``@protected``) or uncounted after it
    settles: bool = False

    def done(self) -> None:
        for attempt_here in self.in_flight:
            attempt_here.done()


_NOTHING_CHECKED = _Checked()


def guard_view(
    app: Quart, state: GuardsState, plan: Plan, view: Callable[..., Any]
) -> Callable[..., Awaitable[Any]]:
    """Wrap ``view`` with the checks of ``plan``."""
    inner = app.ensure_async(view)
    safelist = state.settings.safelist

    @functools.wraps(view)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        if not state.enabled:
            return await inner(*args, **kwargs)
        http = has_request_context()
        proxy = request if http else websocket  # the object, not Quart's proxy, is kept
        ctx = RequestFacts(state, proxy._get_current_object())  # type: ignore[union-attr]
        checked = _NOTHING_CHECKED
        try:
            if plan.counts:
                safelisted = bool(safelist) and in_networks(ctx.client_address(), safelist)
                if not plan.protecting:
                    if not safelisted:
                        checked = await _check_rates(state, plan, ctx, http)
                elif not safelisted or plan.keyed:
                    checked = await _check_limits(state, plan, ctx, http, safelisted)
            return await _after_the_check(app, state, plan, ctx, checked, http, inner, args, kwargs)
        finally:
            if checked.in_flight:  # uncount this request's attempts (if settling did not)
                checked.done()
            if ctx.lookup is not None:  # refused, or answered without the cache
                drop_lookup(ctx)

    setattr(guarded, _WRAPPED, True)
    return guarded


async def _after_the_check(
    app: Quart,
    state: GuardsState,
    plan: Plan,
    ctx: RequestFacts,
    checked: _Checked,
    http: bool,
    inner: Callable[..., Awaitable[Any]],
    args: Any,
    kwargs: Any,
) -> Any:
    """Steps 2 to 4: pre-checks, the cache, the view, and what ``@protected`` counts."""
    headers = checked.headers
    if ctx.user_error is not None:  # e.g. a bad token: refused, after its IP was charged
        await _settle(state, plan, checked, ctx.user_error.code or 500)
        raise _refuse(ctx.user_error, headers, http)
    if plan.prechecks:
        try:
            for check in plan.prechecks:
                await invoke(check)
        except HTTPException as error:
            await _settle(state, plan, checked, error.code or 500)
            _promise_headers(headers, http)
            raise
    if not http:
        # A websocket: its handshake was checked above (read, not reserved); it has no
        # response to count, cache or decorate.
        return await inner(*args, **kwargs)

    async def run_view() -> Response:
        try:
            rv = await inner(*args, **kwargs)
        except HTTPException as error:
            await _settle(state, plan, checked, error.code or 500)
            raise
        except Exception:
            await _settle(state, plan, checked, 500)
            raise
        response: Response = await app.make_response(rv)  # type: ignore[assignment]
        await _settle(state, plan, checked, response.status_code)
        return response

    try:
        if plan.cache is not None and ctx.conn.method in _CACHEABLE_METHODS:
            response = await cached_response(state, plan.cache, ctx, run_view)
        elif checked.settles:
            response = await run_view()
        else:  # nothing to count after the view
            response = await app.make_response(await inner(*args, **kwargs))  # type: ignore[assignment]
    except HTTPException:
        _promise_headers(headers, http)
        raise  # as it was raised: its cause and traceback are the app's to read
    if headers:
        put_headers(response, headers)
    return response


def _header_adder(headers: _HeaderList) -> Callable[[ResponseTypes], ResponseTypes]:
    """An ``after_this_request`` hook: RateLimit headers go on error responses too.

    The app's own error handlers render the guards' exceptions however they like;
    this puts the headers on whatever they answer.
    """

    def add(response: ResponseTypes) -> ResponseTypes:
        for name, value in headers:
            response.headers.setdefault(name, value)
        return response

    return add


def _promise_headers(headers: _HeaderList, http: bool) -> None:
    """Put ``headers`` on the response the app's error handlers are about to build."""
    if headers and http:
        after_this_request(_header_adder(headers))


def _refuse(error: HTTPException, headers: _HeaderList, http: bool) -> HTTPException:
    """``error``, with ``headers`` promised to the response the app's handlers build."""
    _promise_headers(headers, http)
    return error


# -- 1. limits and bans ----------------------------------------------------


async def _check_limits(
    state: GuardsState, plan: Plan, ctx: RequestFacts, http: bool, safelisted: bool
) -> _Checked:
    """One store call for every limit, ban and tally; raises to refuse the request.

    A ``safelisted`` client skips its limits and bans; only the tallies of the keys it
    tries (``@protected(key=...)``: an account) still count it. (An endpoint with
    rate limits alone takes :func:`_check_rates` instead.)
    """
    limits: list[Limit] = []
    sets: list[PolicySet] = []
    fail_closed = False
    if not safelisted:
        limits, sets, fail_closed = await _limits(state, plan, ctx)
    checks: list[tuple[Protect, BanCheck]] = []
    in_flight: list[InFlight] = []
    if plan.protects and not safelisted:
        client = ctx.client_key()
        for protect in plan.protects:
            check, here = protect.ban_check(client, state, reserve=http)
            checks.append((protect, check))
            in_flight.append(here)
    bans = [check for _, check in checks] if checks else []
    if plan.unrouted is not None and not safelisted:
        ip = ctx.client_key()
        bans.append(BanCheck(f"{plan.unrouted.fail_key}{ip}}}", f"{plan.unrouted.ban_key}{ip}}}"))
    tallies: list[Tally] = []
    attempts: list[Attempt] = []
    for protect in plan.keyed:
        pending = await attempt(protect, ctx, reserve=http, safelisted=safelisted)
        attempts.append(pending)
        tallies += pending.tallies
    if not limits and not bans and not tallies:
        return _NOTHING_CHECKED
    checked = _Checked(checks=tuple(checks), in_flight=tuple(in_flight))
    if plan.cache is not None and http:
        start_lookup(state, plan.cache, ctx)  # sent with the check; served only after it
    try:
        result = await store_op(state.counter_breaker, state.counters.check(limits, bans, tallies))
    except BaseException:
        checked.done()
        raise
    if result is None or not result.allowed:
        checked.done()  # nothing was let through: no attempt runs
    else:  # a reserved attempt is counted in the store, not here
        for (_, _), here, ban in zip(checks, in_flight, result.bans, strict=False):
            if ban.reserved:
                here.done()
    if result is None:
        if fail_closed:
            raise GuardUnavailable()
        return _NOTHING_CHECKED
    headers = (
        rate_limit_headers(sets, result.limits, state.settings.legacy_headers) if limits else ()
    )
    if result.banned:
        _metrics.PROTECT_BLOCKED.inc()
        owners: list[Protect | UnroutedBlock] = [p for p, _ in checks]
        if plan.unrouted is not None:
            owners.append(UNROUTED_BLOCK)
        owner, retry_ms = first_ban(owners, attempts, result)
        _remember_refusal(state, plan, ctx, retry_ms / 1000)
        blocked = owner.blocked(retry_ms, headers)
        if isinstance(blocked, Blocked) and blocked.code == 429 and isinstance(owner, Protect):
            policy = owner.policy
            await _breached(state, plan, ctx, policy, blocked.retry_after or 1)
        extra = blocked.get_headers()[1:] if isinstance(blocked, Blocked) else ()
        raise _refuse(blocked, extra, http)
    if not result.allowed:
        await _limited(state, plan, ctx, sets, result, headers, http)
    if limits:
        _metrics.count_rate_allowed()
    checked.result = result
    checked.headers = headers
    checked.attempts = tuple(attempts)
    checked.settles = bool(checks or attempts or in_flight)
    return checked


async def _check_rates(state: GuardsState, plan: Plan, ctx: RequestFacts, http: bool) -> _Checked:
    """:func:`_check_limits` of an endpoint with rate limits only (no ``@protected``,
    no scanner ban): nothing is reserved, so nothing is settled after the view."""
    limits, sets, fail_closed = await _limits(state, plan, ctx)
    if not limits:
        return _NOTHING_CHECKED
    if plan.cache is not None and http:
        start_lookup(state, plan.cache, ctx)  # sent with the check; served only after it
    result = await store_op(state.counter_breaker, state.counters.check(limits, ()))
    if result is None:
        if fail_closed:
            raise GuardUnavailable()
        return _NOTHING_CHECKED
    headers = rate_limit_headers(sets, result.limits, state.settings.legacy_headers)
    if not result.allowed:
        await _limited(state, plan, ctx, sets, result, headers, http)
    _metrics.count_rate_allowed()
    return _Checked(result, headers)


async def _limited(
    state: GuardsState,
    plan: Plan,
    ctx: RequestFacts,
    sets: Sequence[PolicySet],
    result: CheckResult,
    headers: _HeaderList,
    http: bool,
) -> None:
    """Refuse a request a rate limit refused: 429 with ``Retry-After``; ``on_breach`` hears."""
    _metrics.RATE_LIMITED.inc()
    refusing = [
        (policy, s)
        for policy, s in zip(_policies(sets), result.limits, strict=True)
        if not s.allowed
    ]
    retry_ms = max(s.retry_after_ms for _, s in refusing)
    retry_after = max(1, seconds_up(retry_ms))
    _remember_refusal(state, plan, ctx, retry_ms / 1000)
    limited = RateLimitExceeded(retry_after, headers)
    await _breached(state, plan, ctx, refusing[0][0], retry_after)
    raise _refuse(limited, limited.get_headers()[1:], http)


def _remember_refusal(state: GuardsState, plan: Plan, ctx: RequestFacts, seconds: float) -> None:
    """Remember a client refused on a cached endpoint: until ``seconds`` pass, its
    requests to any cached endpoint look the cache up only once their check allowed
    them (per process; see ``_refused``)."""
    if plan.cache is None:
        return
    keys = [ctx.client_key()]
    if ctx.user is not None:
        keys.append(user_key(ctx.user))
    state.refused.refuse(keys, seconds)


async def _limits(
    state: GuardsState, plan: Plan, ctx: RequestFacts
) -> tuple[list[Limit], list[PolicySet], bool]:
    """The request's limits, their policy sets in order, and whether one fails closed."""
    method = ctx.conn.method
    limits: list[Limit] = []
    sets: list[PolicySet] = []
    fail_closed = False
    for rate in plan.rates:
        if rate.methods is not None and method not in rate.methods:
            continue
        if rate.exempt_when is not None and await invoke(rate.exempt_when):
            continue
        if rate.key is not None:
            ident = await invoke(rate.key)
            if ident is None or ident == "":
                state.warn_once(
                    f"empty-key:{rate.bucket}",
                    "rate_limited(key=...) on %s returned an empty identity; "
                    "counting such requests by client IP instead",
                    rate.bucket,
                )
                limits.append(Limit(f"{rate.keys}{ctx.client_key()}}}", *rate.terms))
                sets.append(rate.by_ip)
            else:
                limits.append(Limit(f"{rate.keys}{typed_key('k', str(ident))}}}", *rate.terms))
                sets.append(rate.by_key)
        else:
            if rate.ip:
                limits.append(make_tuple(Limit, (f"{rate.keys}{ctx.client_key()}}}", *rate.terms)))
            user = None
            if rate.user:
                user = await ctx.user_id_for_limits()
            if user is not None:
                limits.append(make_tuple(Limit, (f"{rate.keys}{user_key(user)}}}", *rate.terms)))
                sets.append(rate.by_ip_user if rate.ip else rate.by_user)
            elif rate.ip:
                sets.append(rate.by_ip)
        fail_closed = fail_closed or rate.fail_closed
    return limits, sets, fail_closed


def _policies(sets: Sequence[PolicySet]) -> list[Policy]:
    return [policy for policy_set in sets for policy in policy_set.policies]


async def _breached(
    state: GuardsState, plan: Plan, ctx: RequestFacts, policy: Policy, retry_after: int
) -> None:
    """Tell ``on_breach`` about a 429; its failure is logged once and never changes the 429.

    An async hook gets :data:`~quart_api.guards.config.ON_BREACH_TIMEOUT` seconds, then
    is cancelled: the 429 is answered either way, so a slow alerting backend never
    holds refused requests open (a flood of them is exactly when the hook is called).
    """
    hook = state.on_breach
    if hook is None:
        return
    address = ctx.client_address()
    breach = Breach(
        endpoint=plan.endpoint,
        policy=policy.name,
        limit=policy.quota,
        window=policy.window_s,
        key_kind=policy.kind,  # type: ignore[arg-type]
        retry_after=retry_after,
        client=None if address is None else str(address),
    )
    deadline = asyncio.timeout(ON_BREACH_TIMEOUT)
    try:
        async with deadline:
            await invoke(functools.partial(hook, breach))
    except TimeoutError:
        if not deadline.expired():
            _hook_raised(state)
        else:
            state.warn_once(
                "on-breach-slow",
                "Guards(on_breach=...) took longer than %s s and was cancelled; the 429 "
                "was answered anyway (logged once)",
                ON_BREACH_TIMEOUT,
            )
    except Exception:  # noqa: BLE001 (a user's hook: what it raises is logged, the 429 stands)
        _hook_raised(state)


def _hook_raised(state: GuardsState) -> None:
    state.warn_once(
        "on-breach",
        "Guards(on_breach=...) raised; the 429 was answered anyway (logged once)",
        exc_info=True,
    )


async def _settle(state: GuardsState, plan: Plan, checked: _Checked, status: int) -> None:
    """After the view: settle ``@protected`` with the answer's status (see ``settle``).

    Nothing is recorded when the check before the view got no answer: the store is
    down or skipped, and a second call would only pay its timeout again.
    """
    if checked.result is not None and (checked.checks or checked.attempts):
        await settle(state, checked.checks, checked.result, checked.attempts, status)
    if checked.in_flight:
        checked.done()
