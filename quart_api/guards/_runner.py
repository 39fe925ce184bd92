"""The guarded view: every check of one endpoint, always in the same order.

1. Limits and bans: every rate limit (per IP, per user, custom key), every
   ``@protected`` ban check and every ``@protected(key=...)`` tally of the request,
   in ONE store call (one Redis round trip, all-or-nothing; a tally reserves the
   attempt in that same call). A banned client gets the block response, a limited
   one 429; neither reaches the view.
2. Pre-checks (``requires_scopes`` and other authorization hooks).
3. The cache: a fresh hit is answered here; nothing above was skipped.
4. The view; then failures are counted for ``@protected`` (a tally's reservation
   is kept for a failure, given back otherwise) and cacheable responses stored.

Keys are ``<prefix>:<kind>:<bucket>:...{<typed identity>}``: the identity is typed
(``_identity``), so an address, a user and a custom key can never spell one
another, and it is the hash tag, so one client's keys share a Redis Cluster slot.

Because the order lives here and not in the order decorators were written,
a cache hit can never bypass a limit, a ban or a scope check.

This is every guarded request's path, so what does not vary per request (key
prefixes, policy names, ``RateLimit-Policy`` values, the cache namespace) is
worked out once per endpoint at start-up, in its plan: a request formats only its
own identity and the numbers the store answered. The cache flow is in
``_cached_view``; what both flows share per request is in ``_context``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from quart import Quart, Response, after_this_request, has_request_context, request, websocket
from quart.typing import ResponseTypes
from werkzeug.exceptions import HTTPException

from quart_api.guards import _metrics
from quart_api.guards._arguments import rate_from_config
from quart_api.guards._cached_view import CachePlan, cached_response
from quart_api.guards._context import RequestFacts, invoke, store_op, user_key
from quart_api.guards._extension import GuardsState
from quart_api.guards._identity import typed_key
from quart_api.guards._protected_view import (
    UNROUTED_BLOCK,
    Attempt,
    Ban,
    Protect,
    UnroutedBlock,
    attempt,
    first_ban,
    settle,
)
from quart_api.guards._responses import (
    Blocked,
    GuardUnavailable,
    Policy,
    PolicySet,
    RateLimitExceeded,
    rate_limit_headers,
    seconds_up,
)
from quart_api.guards._specs import Marks, ProtectSpec, RateSpec
from quart_api.guards.stores.base import BanCheck, CheckResult, Limit, Tally

__all__ = ["guard_view", "is_guarded"]

_WRAPPED = "__quart_api_guarded__"
_CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
_HeaderList = Sequence[tuple[str, str]]
_NO_HEADERS: _HeaderList = ()


def is_guarded(view: Callable[..., Any]) -> bool:
    return getattr(view, _WRAPPED, False) is True


# -- the plan: what one endpoint checks, resolved once at start-up ---------------


class _Rate:
    """One ``@rate_limited`` of an endpoint: its key prefix and policies precomputed.

    A request's keys are the prefix plus its typed identity (``<prefix>{i:1.2.3.4}``),
    and which policies apply depends only on which identities it has, so nothing but
    the identity itself is formatted per request.
    """

    __slots__ = (
        "bucket",
        "by_ip",
        "by_ip_user",
        "by_key",
        "by_user",
        "exempt_when",
        "fail_closed",
        "ip",
        "key",
        "keys",
        "methods",
        "terms",
        "user",
    )

    def __init__(self, spec: RateSpec, suffix: str, endpoint: str, key_prefix: str) -> None:
        self.bucket = bucket = endpoint if spec.scope is None else spec.scope
        # One GCRA state per distinct rate: two limits of one view (or of one scope)
        # sharing a key would overwrite each other's theoretical arrival time.
        self.keys = f"{key_prefix}:r:{bucket}:{spec.limit}/{spec.window_ms}:{{"
        #: Limit's arguments after the key
        self.terms = (spec.limit, spec.window_ms, spec.cost, spec.dry_run)
        self.methods = spec.methods
        self.exempt_when = spec.exempt_when
        self.key = spec.key
        self.ip = spec.ip
        self.user = spec.user
        self.fail_closed = spec.fail_closed
        window_s = _window_s(spec)

        def policy(kind: str) -> Policy:
            name = f"{spec.scope}-{kind}" if spec.scope else kind
            return Policy(name + suffix, spec.limit, window_s)

        ip, user = policy("ip"), policy("user")
        self.by_ip = PolicySet(ip)
        self.by_user = PolicySet(user)
        self.by_ip_user = PolicySet(ip, user)
        self.by_key = PolicySet(policy("key"))


class _Plan:
    """What one endpoint checks, resolved once at start-up."""

    __slots__ = ("ban_owners", "bans", "cache", "counts", "keyed", "prechecks", "protects", "rates")

    def __init__(
        self, endpoint: str, marks: Marks, state: GuardsState, config: Mapping[str, Any]
    ) -> None:
        prefix = state.key_prefix
        specs = tuple(_configured(s, config) for s in marks.rates)
        self.rates = tuple(
            _Rate(spec, suffix, endpoint, prefix)
            for spec, suffix in zip(specs, _rate_suffixes(specs), strict=True)
        )
        protects = [Protect(_configured(s, config), endpoint, prefix) for s in marks.protects]
        #: protects counted per client IP (a counter and a ban key)
        self.protects = tuple(p for p in protects if p.ban is not None)
        #: protects counted per client IP and per key (two tallies)
        self.keyed = tuple(p for p in protects if p.ban is None)
        #: every ban checked before the view: the endpoint's, then the unrouted one,
        #: and whose block answers each
        self.bans = tuple(p.ban for p in self.protects if p.ban is not None)
        self.ban_owners: tuple[Protect | UnroutedBlock, ...] = self.protects
        if state.protect_unrouted:
            self.bans += (Ban("unrouted", prefix),)
            self.ban_owners += (UNROUTED_BLOCK,)
        #: whether the counters store is asked anything before the view
        self.counts = bool(self.rates or self.bans or self.keyed)
        self.cache = None if marks.cache is None else CachePlan(state, marks.cache, endpoint)
        self.prechecks = tuple(marks.prechecks)


class _Checked:
    """What the check before the view found out, for the steps after it."""

    __slots__ = ("attempts", "headers", "result")

    def __init__(
        self,
        result: CheckResult | None = None,
        headers: _HeaderList = (),
        attempts: tuple[Attempt, ...] = (),
    ) -> None:
        self.result = result
        self.headers = headers
        self.attempts = attempts


_NOTHING_CHECKED = _Checked()


def _rate_suffixes(rates: tuple[RateSpec, ...]) -> tuple[str, ...]:
    """Policy-name suffixes that tell several limits of one view apart in the headers.

    Draft-10 policy names identify a policy, so two limits of one view (``10/second``
    and ``1000/hour``) must not both be called ``"ip"``; a single limit keeps the
    plain name.
    """
    if len(rates) < 2:
        return ("",) * len(rates)
    windows = [r.window_ms for r in rates]
    return tuple(
        f"-{_window_s(r)}s" if windows.count(r.window_ms) == 1 else f"-{r.limit}-{_window_s(r)}s"
        for r in rates
    )


def _window_s(spec: RateSpec) -> int:
    """The window in whole seconds, as ``RateLimit-Policy: w`` (at least 1)."""
    return max(1, spec.window_ms // 1000)


_S = TypeVar("_S", RateSpec, ProtectSpec)


def _configured(spec: _S, config: Mapping[str, Any]) -> _S:
    """The spec with limit and window from ``app.config[spec.config]`` when set there."""
    if spec.config is None or config.get(spec.config) is None:
        return spec
    limit, window_ms = rate_from_config(spec.config, config[spec.config])
    return replace(spec, limit=limit, window_ms=window_ms)


def guard_view(
    app: Quart, state: GuardsState, endpoint: str, view: Callable[..., Any], marks: Marks
) -> Callable[..., Awaitable[Any]]:
    """Wrap ``view`` with the checks its marks ask for."""
    plan = _Plan(endpoint, marks, state, app.config)
    inner = app.ensure_async(view)

    @functools.wraps(view)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        if not state.enabled:
            return await inner(*args, **kwargs)
        http = has_request_context()
        proxy = request if http else websocket  # the object, not Quart's proxy, is kept
        ctx = RequestFacts(state, proxy._get_current_object())  # type: ignore[union-attr]
        checked = _NOTHING_CHECKED
        if plan.counts:
            checked = await _check_limits(state, plan, ctx, http)
        headers = checked.headers
        if ctx.user_error is not None:  # e.g. a bad token: refused, after its IP was charged
            await _count_failure(state, plan, ctx, checked, ctx.user_error.code or 500)
            if headers and http:
                after_this_request(_header_adder(headers))
            raise ctx.user_error
        if plan.prechecks:
            try:
                for check in plan.prechecks:
                    await invoke(check)
            except HTTPException as error:
                await _count_failure(state, plan, ctx, checked, error.code or 500)
                if headers and http:
                    after_this_request(_header_adder(headers))
                raise
        if not http:
            # A websocket: its handshake was checked above (tallies read, not reserved);
            # it has no response to count, cache or decorate.
            return await inner(*args, **kwargs)

        async def run_view() -> Response:
            try:
                rv = await inner(*args, **kwargs)
            except HTTPException as error:
                await _count_failure(state, plan, ctx, checked, error.code or 500)
                raise
            except Exception:
                await _count_failure(state, plan, ctx, checked, 500)
                raise
            response: Response = await app.make_response(rv)  # type: ignore[assignment]
            if plan.protects or plan.keyed:
                await _count_failure(state, plan, ctx, checked, response.status_code)
            return response

        try:
            if plan.cache is not None and ctx.conn.method in _CACHEABLE_METHODS:
                response = await cached_response(state, plan.cache, ctx, run_view)
            else:
                response = await run_view()
        except HTTPException:
            if headers:  # the error response is built later, by the app's handlers
                after_this_request(_header_adder(headers))
            raise
        for name, value in headers:
            response.headers[name] = value
        return response

    setattr(guarded, _WRAPPED, True)
    return guarded


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


def _refuse(error: HTTPException, headers: _HeaderList, http: bool) -> HTTPException:
    """``error``, with its headers promised to the response the app's handlers build."""
    if headers and http:
        after_this_request(_header_adder(headers))
    return error


# -- 1. limits and bans ----------------------------------------------------


async def _check_limits(state: GuardsState, plan: _Plan, ctx: RequestFacts, http: bool) -> _Checked:
    """One store call for every limit, ban and tally; raises to refuse the request."""
    method = ctx.conn.method
    limits: list[Limit] = []
    sets: list[PolicySet] = []  # the policies of `limits`, in order
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
                limits.append(Limit(f"{rate.keys}{ctx.client_key()}}}", *rate.terms))
            user = None
            if rate.user:
                user = await ctx.user_id_for_limits()
            if user is not None:
                limits.append(Limit(f"{rate.keys}{user_key(user)}}}", *rate.terms))
                sets.append(rate.by_ip_user if rate.ip else rate.by_user)
            elif rate.ip:
                sets.append(rate.by_ip)
        fail_closed = fail_closed or rate.fail_closed
    bans: list[BanCheck] = []
    if plan.bans:
        ip = ctx.client_key()
        bans = [BanCheck(f"{b.fail_key}{ip}}}", f"{b.ban_key}{ip}}}") for b in plan.bans]
    tallies: list[Tally] = []
    attempts: list[Attempt] = []
    for protect in plan.keyed:
        pending = await attempt(protect, ctx, reserve=http)
        attempts.append(pending)
        tallies += pending.tallies
    if not limits and not bans and not tallies:
        return _NOTHING_CHECKED
    result = await store_op(
        state, state.counter_breaker, state.counters.check(limits, bans, tallies)
    )
    if result is None:
        if fail_closed:
            raise GuardUnavailable()
        return _NOTHING_CHECKED
    headers = rate_limit_headers(sets, result.limits, state.legacy_headers) if limits else ()
    if result.banned:
        _metrics.PROTECT_BLOCKED.inc()
        owner, retry_ms = first_ban(plan.ban_owners, attempts, result)
        blocked = owner.blocked(retry_ms, headers)
        extra = blocked.get_headers()[1:] if isinstance(blocked, Blocked) else ()
        raise _refuse(blocked, extra, http)
    if not result.allowed:
        _metrics.RATE_LIMITED.inc()
        retry_ms = max(s.retry_after_ms for s in result.limits if not s.allowed)
        limited = RateLimitExceeded(max(1, seconds_up(retry_ms)), headers)
        raise _refuse(limited, limited.get_headers()[1:], http)
    if limits:
        _metrics.RATE_ALLOWED.inc()
    return _Checked(result, headers, tuple(attempts))


async def _count_failure(
    state: GuardsState, plan: _Plan, ctx: RequestFacts, checked: _Checked, status: int
) -> None:
    """After the view: settle ``@protected`` with the answer's status (see ``settle``).

    Nothing is recorded when the check before the view got no answer: the store is
    down or skipped, and a second call would only pay its timeout again.
    """
    if checked.result is not None and (plan.protects or checked.attempts):
        await settle(state, ctx, plan.protects, plan.bans, checked.result, checked.attempts, status)
