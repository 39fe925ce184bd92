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

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from quart import Quart, Response, after_this_request, has_request_context, request, websocket
from quart.typing import ResponseTypes
from werkzeug.exceptions import HTTPException

from quart_api.guards import _metrics
from quart_api.guards._breaker import Breaker
from quart_api.guards._cache import (
    Entry,
    cache_key,
    decode_entry,
    encode_entry,
    etag_for,
    etag_matches,
    generation_key,
    kept_headers,
    normalized_query,
    storable,
)
from quart_api.guards._extension import GuardsState
from quart_api.guards._identity import client_address, normalize_address
from quart_api.guards._marks import CacheSpec, Marks, ProtectSpec, RateSpec, rate_from_config
from quart_api.guards._responses import (
    Blocked,
    GuardUnavailable,
    RateLimitExceeded,
    rate_limit_headers,
    seconds_up,
)
from quart_api.guards.stores.base import (
    BanCheck,
    CheckResult,
    Failure,
    Limit,
    StoreError,
)

__all__ = ["guard_view", "invalidate_namespace", "is_guarded", "store_op"]

log = logging.getLogger("quart_api.guards")

_WRAPPED = "__quart_api_guarded__"
_LOCK_TTL = 10  # seconds a cross-process refresh lock may live (a slow view)
# Polls for another worker's entry: quick at first, then every 100 ms, for as long as
# a refresh may take (the lock's TTL), since a fixed short budget lets a slow view
# stampede every worker anyway.
_LOCK_POLLS = (0.01, 0.02, 0.04, 0.08) + (0.1,) * (_LOCK_TTL * 10)


def is_guarded(view: Callable[..., Any]) -> bool:
    return getattr(view, _WRAPPED, False) is True


async def _call(fn: Callable[[], Any]) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


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
_T = TypeVar("_T")


def _configured(spec: _S, config: Mapping[str, Any]) -> _S:
    """The spec with limit and window from ``app.config[spec.config]`` when set there."""
    if spec.config is None or config.get(spec.config) is None:
        return spec
    limit, window_ms = rate_from_config(spec.config, config[spec.config])
    return replace(spec, limit=limit, window_ms=window_ms)


class _Request:
    """Per-request facts computed at most once (the user loader may hit a database)."""

    __slots__ = ("conn", "failed", "ip", "state", "user", "user_loaded")

    def __init__(self, state: GuardsState) -> None:
        self.state = state
        self.conn = request if has_request_context() else websocket
        self.ip: str | None = None
        self.user: str | None = None
        self.user_loaded = False
        #: breakers of the stores that failed during this request (skipped from then on)
        self.failed: list[Breaker] = []

    def client_ip(self) -> str:
        if self.ip is None:
            conn = self.conn
            address = client_address(
                conn.remote_addr,
                conn.headers.get("X-Forwarded-For"),
                self.state.trusted_proxy_count,
            )
            self.ip = normalize_address(address, self.state.ipv6_prefix)
        return self.ip

    async def user_id(self) -> str | None:
        if not self.user_loaded:
            self.user = await self.state.guards.load_user()
            self.user_loaded = True
        return self.user


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
        ctx = _Request(state)
        result, headers = await _check_limits(state, plan, ctx)
        if plan.prechecks:
            try:
                for check in plan.prechecks:
                    await _call(check)
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
                response = await _cached(state, plan, plan.cache, ctx, run_view)
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
    state: GuardsState, plan: _Plan, ctx: _Request
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
        if spec.exempt_when is not None and await _call(spec.exempt_when):
            continue
        bucket = spec.scope or plan.endpoint
        window_s = _window_s(spec)
        # One GCRA state per distinct rate: two limits of one view (or of one scope)
        # sharing a key would overwrite each other's theoretical arrival time.
        rate = f"{spec.limit}/{spec.window_ms}"
        identities: list[tuple[str, str]] = []
        if spec.key is not None:
            ident = await _call(spec.key)
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
    state: GuardsState, plan: _Plan, ctx: _Request, result: CheckResult | None, status: int
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


async def store_op(
    state: GuardsState, breaker: Breaker, call: Awaitable[_T], ctx: _Request | None = None
) -> _T | None:
    """One store call behind its breaker; None if it failed or was skipped (fail open).

    The one place where the guards fail open. Time bounds belong to the stores
    (``STORE_TIMEOUT`` on a call, but a longer wait for a free pooled connection: a
    burst must queue, never be waved through a limit as if the store were down), so
    none is added here. With ``ctx``, one failure skips the request's later calls to
    the same store: a dead store costs a request one timeout, not one per call.
    """
    if (ctx is not None and breaker in ctx.failed) or not breaker.allow():
        if inspect.iscoroutine(call):
            call.close()
        return None
    try:
        value = await call
    except StoreError as error:
        breaker.failure(error)
        if ctx is not None:
            ctx.failed.append(breaker)
        return None
    breaker.success()
    return value


# -- 3. the cache ----------------------------------------------------------


async def _cache_op(state: GuardsState, call: Awaitable[_T], ctx: _Request | None) -> _T | None:
    return await store_op(state, state.cache_breaker, call, ctx)


async def _generation(state: GuardsState, namespace: str, ctx: _Request | None = None) -> int:
    """The namespace generation, cached in-process for ``generation_ttl`` seconds.

    Re-reading it on every hit would make each hit cost two keys; this way a
    hit costs one, and another worker's invalidation is seen within a second.
    """
    now = state.clock()
    known = state.generations.get(namespace)
    if known is not None and now - known[1] < state.generation_ttl:
        return known[0]
    raw = await _cache_op(state, state.cache.get(generation_key(state.key_prefix, namespace)), ctx)
    generation = int(raw) if raw and raw.isdigit() else 0
    state.generations[namespace] = (generation, now)
    return generation


async def invalidate_namespace(state: GuardsState, namespace: str) -> None:
    generation = await _cache_op(
        state, state.cache.incr(generation_key(state.key_prefix, namespace)), None
    )
    if generation is None:  # the store is down: at least this process stops serving it
        known = state.generations.get(namespace, (0, 0.0))[0]
        generation = known + 1
    state.generations[namespace] = (int(generation), state.clock())


def _serve(entry: Entry, label: str) -> Response:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and etag_matches(if_none_match, entry.etag):
        response = Response(b"", status=304)
        response.headers["ETag"] = entry.etag
        for name, value in entry.headers:
            if name.lower() in ("cache-control", "vary", "expires", "content-location"):
                response.headers[name] = value
    else:
        response = entry.response()
    response.headers["X-Cache"] = label
    return response


def _has_credentials() -> bool:
    headers = request.headers
    return "Authorization" in headers or "Cookie" in headers


async def _cached(
    state: GuardsState,
    plan: _Plan,
    spec: CacheSpec,
    ctx: _Request,
    run_view: Callable[[], Awaitable[Response]],
) -> Response:
    user: str | None = None
    if spec.unique_per_user:
        user = await ctx.user_id()
        if user is None and _has_credentials():
            _metrics.CACHE_BYPASS.inc()
            return await run_view()  # never stored under a shared key
    namespace = spec.namespace or plan.endpoint
    generation = await _generation(state, namespace, ctx)
    key = cache_key(
        state.key_prefix,
        namespace,
        generation,
        user,
        request.path,
        normalized_query(request.query_string),
    )
    raw = await _cache_op(state, state.cache.get(key), ctx)
    entry = decode_entry(raw) if raw else None
    now = state.clock()
    if entry is not None and now < entry.fresh_until:
        _metrics.CACHE_HIT.inc()
        return _serve(entry, "hit")
    stale = entry if entry is not None and now < entry.stale_until else None
    waiting = state.inflight.get(key)
    if waiting is not None:  # this process is already computing it
        if stale is not None:
            _metrics.CACHE_STALE.inc()
            return _serve(stale, "stale")
        _metrics.CACHE_MISS.inc()
        shared: Entry | None = await asyncio.shield(waiting)
        if shared is not None:
            return _serve(shared, "hit")
        return await run_view()  # it was not storable: each request answers for itself
    # Claim the key before the next await, or every concurrent miss of this process
    # would get past the check above while this one waits for memcached.
    future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
    state.inflight[key] = future
    computed: Entry | None = None
    lock = key + b":lock"
    locked = None
    try:
        locked = await _cache_op(state, state.cache.add(lock, b"1", _LOCK_TTL), ctx)
        if locked is False:  # another worker is refreshing this key
            if stale is not None:
                _metrics.CACHE_STALE.inc()
                return _serve(stale, "stale")
            for delay in _LOCK_POLLS:  # wait for its entry rather than stampede
                await asyncio.sleep(delay)
                raw = await _cache_op(state, state.cache.get(key), ctx)
                found = decode_entry(raw) if raw else None
                if found is not None and state.clock() < found.stale_until:
                    computed = found
                    _metrics.CACHE_HIT.inc()
                    return _serve(found, "hit")
                # No entry yet: take the lock over if its holder finished without
                # storing (an uncacheable answer) or died; otherwise keep waiting.
                locked = await _cache_op(state, state.cache.add(lock, b"1", _LOCK_TTL), ctx)
                if locked is not False:
                    break
        if stale is None:
            _metrics.CACHE_MISS.inc()
        response, computed = await _refresh(state, spec, ctx, key, run_view, stale)
        return response
    finally:
        future.set_result(computed)
        del state.inflight[key]
        if locked:
            await _cache_op(state, state.cache.delete(lock), ctx)


async def _refresh(
    state: GuardsState,
    spec: CacheSpec,
    ctx: _Request,
    key: bytes,
    run_view: Callable[[], Awaitable[Response]],
    stale: Entry | None,
) -> tuple[Response, Entry | None]:
    """Run the view for ``key`` and store its answer; a failure falls back on ``stale``."""
    try:
        response = await run_view()
    except HTTPException as error:
        if stale is None or (error.code or 500) < 500:
            raise
        return _serve_stale(stale, error), None
    except Exception as error:
        if stale is None:
            raise
        return _serve_stale(stale, error), None
    if stale is not None and response.status_code >= 500:
        return _serve_stale(stale, None), None
    entry = await _store(state, spec, ctx, key, response)
    if entry is None:
        response.headers["X-Cache"] = "miss"
        return response, None
    return _serve(entry, "miss"), entry


def _serve_stale(stale: Entry, error: BaseException | None) -> Response:
    """The stale copy instead of a failed refresh; the failure is still logged."""
    _metrics.CACHE_STALE.inc()
    if error is not None and not isinstance(error, HTTPException):
        log.error(
            "view failed while refreshing %s; served the stale copy", request.path, exc_info=error
        )
    return _serve(stale, "stale")


async def _store(
    state: GuardsState, spec: CacheSpec, ctx: _Request, key: bytes, response: Response
) -> Entry | None:
    """Store ``response`` if the gate allows it.

    "Per user" for the gate is whether this entry's key names a user, not whether the
    view asked for per-user entries: an anonymous request's entry is shared by every
    anonymous client, so it must not hold a ``private`` response.
    """
    per_user = spec.unique_per_user and ctx.user is not None  # the user is in the key
    if not storable(response, per_user=per_user, request_headers=request.headers):
        return None
    body = await response.get_data(as_text=False)
    now = state.clock()
    entry = Entry(
        status=response.status_code,
        headers=kept_headers(response, spec.extra_headers),
        body=body,
        etag=etag_for(body),
        stored_at=now,
        fresh_until=now + spec.ttl,
        stale_until=now + spec.ttl + spec.stale,
    )
    encoded = encode_entry(entry)
    if len(encoded) <= state.cache.max_item_bytes:
        await _cache_op(state, state.cache.set(key, encoded, spec.ttl + spec.stale), ctx)
    return entry
