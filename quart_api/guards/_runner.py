"""The guarded view: every check of one endpoint, always in the same order.

1. Limits and bans: every rate limit (per IP, per user, custom key) and every
   ``@protected`` ban check of the request, in ONE store call (one Redis round
   trip, all-or-nothing). A banned client gets the block response, a limited
   one 429; neither reaches the view.
2. Pre-checks (``requires_scopes`` and other authorization hooks).
3. The cache: a fresh hit is answered here; nothing above was skipped.
4. The view; then failures are counted for ``@protected`` and cacheable
   responses stored.

Because the order lives here and not in the order decorators were written,
a cache hit can never bypass a limit, a ban or a scope check.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from quart import Quart, Response, after_this_request, has_request_context, request
from quart.typing import ResponseTypes
from werkzeug.exceptions import HTTPException

from quart_api.guards import _metrics
from quart_api.guards._arguments import rate_from_config
from quart_api.guards._cached_view import cached_response
from quart_api.guards._context import RequestFacts, invoke, store_op
from quart_api.guards._extension import GuardsState
from quart_api.guards._responses import (
    Blocked,
    GuardUnavailable,
    RateLimitExceeded,
    rate_limit_headers,
    seconds_up,
)
from quart_api.guards._specs import CacheSpec, Marks, ProtectSpec, RateSpec
from quart_api.guards.stores.base import BanCheck, CheckResult, Failure, Limit

# store_op is re-exported for _unrouted, which records its failures through it.
__all__ = ["guard_view", "is_guarded", "store_op"]

_WRAPPED = "__quart_api_guarded__"


def is_guarded(view: Callable[..., Any]) -> bool:
    return getattr(view, _WRAPPED, False) is True


class _Plan:
    """What one endpoint checks, resolved once at start-up."""

    __slots__ = ("cache", "endpoint", "prechecks", "protects", "rate_suffixes", "rates")

    def __init__(
        self, endpoint: str, marks: Marks, state: GuardsState, config: Mapping[str, Any]
    ) -> None:
        self.endpoint = endpoint
        self.rates: tuple[RateSpec, ...] = tuple(_configured(s, config) for s in marks.rates)
        self.protects: tuple[ProtectSpec, ...] = tuple(
            _configured(s, config) for s in marks.protects
        )
        self.cache: CacheSpec | None = marks.cache
        self.prechecks = tuple(marks.prechecks)
        self.rate_suffixes = _rate_suffixes(self.rates)


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
        ctx = RequestFacts(state)
        result, headers = await _check_limits(state, plan, ctx)
        if plan.prechecks:
            try:
                for check in plan.prechecks:
                    await invoke(check)
            except HTTPException as error:
                await _count_failure(state, plan, ctx, result, error.code or 500)
                if headers and has_request_context():
                    after_this_request(_header_adder(headers))
                raise
        if not has_request_context():
            # A websocket: its handshake was checked above; it has no response to
            # count, cache or decorate (the view returns None once the socket closes).
            return await inner(*args, **kwargs)

        async def run_view() -> Response:
            try:
                rv = await inner(*args, **kwargs)
            except HTTPException as error:
                await _count_failure(state, plan, ctx, result, error.code or 500)
                raise
            response: Response = await app.make_response(rv)  # type: ignore[assignment]
            await _count_failure(state, plan, ctx, result, response.status_code)
            return response

        try:
            if plan.cache is not None and request.method in ("GET", "HEAD"):
                response = await cached_response(state, plan.endpoint, plan.cache, ctx, run_view)
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


def _header_adder(headers: list[tuple[str, str]]) -> Callable[[ResponseTypes], ResponseTypes]:
    """An ``after_this_request`` hook: RateLimit headers go on error responses too."""

    def add(response: ResponseTypes) -> ResponseTypes:
        for name, value in headers:
            response.headers.setdefault(name, value)
        return response

    return add


# -- 1. limits and bans ----------------------------------------------------


async def _check_limits(
    state: GuardsState, plan: _Plan, ctx: RequestFacts
) -> tuple[CheckResult | None, list[tuple[str, str]]]:
    """One store call for every limit and ban; raises to refuse the request."""
    if not (plan.rates or plan.protects or state.protect_unrouted):
        return None, []
    prefix = state.key_prefix
    method = ctx.conn.method
    limits: list[Limit] = []
    policies: list[tuple[str, int, int, int]] = []  # name, quota, window s, index in limits
    fail_closed = False
    for spec, suffix in zip(plan.rates, plan.rate_suffixes, strict=True):
        if spec.methods is not None and method not in spec.methods:
            continue
        if spec.exempt_when is not None and await invoke(spec.exempt_when):
            continue
        bucket = spec.scope or plan.endpoint
        window_s = _window_s(spec)
        # One GCRA state per distinct rate: two limits of one view (or of one scope)
        # sharing a key would overwrite each other's theoretical arrival time.
        rate = f"{spec.limit}/{spec.window_ms}"
        identities: list[tuple[str, str]] = []
        if spec.key is not None:
            ident = await invoke(spec.key)
            if ident is None or ident == "":
                state.warn_once(
                    f"empty-key:{bucket}",
                    "rate_limited(key=...) on %s returned an empty identity; "
                    "counting such requests by client IP instead",
                    bucket,
                )
                identities.append(("ip", f"{{{ctx.client_ip()}}}"))
            else:
                identities.append(("key", f"{{k:{ident}}}"))
        else:
            if spec.ip:
                identities.append(("ip", f"{{{ctx.client_ip()}}}"))
            if spec.user:
                user = await ctx.user_id()
                if user is not None:
                    identities.append(("user", f"{{u:{user}}}"))
        for kind, ident in identities:
            name = (f"{spec.scope}-{kind}" if spec.scope else kind) + suffix
            policies.append((name, spec.limit, window_s, len(limits)))
            limits.append(
                Limit(
                    key=f"{prefix}:r:{bucket}:{rate}:{ident}",
                    limit=spec.limit,
                    window_ms=spec.window_ms,
                    cost=spec.cost,
                    dry_run=spec.dry_run,
                )
            )
        fail_closed = fail_closed or spec.fail_closed
    bans: list[BanCheck] = []
    block_statuses: list[int] = []
    if plan.protects or state.protect_unrouted:
        ip = ctx.client_ip()
        for protect in plan.protects:
            scope = protect.scope or plan.endpoint
            bans.append(BanCheck(f"{prefix}:f:{scope}:{{{ip}}}", f"{prefix}:b:{scope}:{{{ip}}}"))
            block_statuses.append(protect.block_status)
        if state.protect_unrouted:
            bans.append(BanCheck(f"{prefix}:f:unrouted:{{{ip}}}", f"{prefix}:b:unrouted:{{{ip}}}"))
            block_statuses.append(404)
    if not limits and not bans:
        return None, []
    result = await _counter_call(state, limits, bans)
    if result is None:
        if fail_closed:
            raise GuardUnavailable()
        return None, []
    if result.banned:
        _metrics.PROTECT_BLOCKED.inc()
        status, retry = next(
            (code, ban.retry_after_ms)
            for code, ban in zip(block_statuses, result.bans, strict=True)
            if ban.banned
        )
        raise Blocked(status, seconds_up(retry))
    headers = rate_limit_headers(
        ((name, quota, window, result.limits[i]) for name, quota, window, i in policies),
        state.legacy_headers,
    )
    if not result.allowed:
        _metrics.RATE_LIMITED.inc()
        retry_ms = max(s.retry_after_ms for s in result.limits if not s.allowed)
        raise RateLimitExceeded(max(1, seconds_up(retry_ms)), headers)
    if limits:
        _metrics.RATE_ALLOWED.inc()
    return result, headers


async def _counter_call(
    state: GuardsState, limits: list[Limit], bans: list[BanCheck]
) -> CheckResult | None:
    result: CheckResult | None = await store_op(
        state, state.counter_breaker, state.counters.check(limits, bans)
    )
    return result


async def _count_failure(
    state: GuardsState, plan: _Plan, ctx: RequestFacts, result: CheckResult | None, status: int
) -> None:
    """After the view: count a failure status, or clear failures on success.

    Nothing is recorded when the check before the view got no answer (``result`` is
    None): the store is down or skipped, and a second call would only pay its
    timeout again.
    """
    if not plan.protects or result is None:
        return
    ip = ctx.client_ip()
    prefix = state.key_prefix
    for index, protect in enumerate(plan.protects):
        scope = protect.scope or plan.endpoint
        fail_key = f"{prefix}:f:{scope}:{{{ip}}}"
        if status in protect.statuses:
            _metrics.PROTECT_FAILURES.inc()
            failure = Failure(
                fail_key=fail_key,
                ban_key=f"{prefix}:b:{scope}:{{{ip}}}",
                limit=protect.limit,
                window_ms=protect.window_ms,
                offence_key=f"{prefix}:o:{scope}:{{{ip}}}" if protect.escalate else None,
                max_ban_ms=protect.max_ban_ms,
            )
            await store_op(state, state.counter_breaker, state.counters.record_failure(failure))
        elif protect.reset_on_success and 200 <= status < 300 and result.bans[index].failures > 0:
            await store_op(state, state.counter_breaker, state.counters.delete([fail_key]))
