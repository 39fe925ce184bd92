"""The decorators: they check their arguments, record intent on the view, return it unchanged.

Because a decorator only marks the function, the order in which
``@rate_limited``, ``@protected``, ``@cached`` and ``@precheck`` are written does
not matter, and writing them above or below ``@app.route`` makes no
difference: :class:`~quart_api.guards.Guards` reads the marks and wraps each
marked view once, in one place, with the checks always in the same order
(limits and bans, then pre-checks, then the cache, then the view).

Every argument is checked here, at import time (with the helpers of
``_arguments``), so a typo fails when the module loads rather than on the first
request in production. What they record is defined in ``_specs``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import timedelta
from typing import Any, TypeVar, overload

from quart_api.guards._arguments import (
    callable_or_none,
    config_key,
    countable,
    methods_of,
    number,
    positive_int,
    scope_of,
    window_ms_of,
)
from quart_api.guards._specs import CacheSpec, IdentityFn, PrecheckFn, ProtectSpec, RateSpec, mark
from quart_api.guards.errors import ConfigurationError

__all__ = ["cached", "precheck", "protected", "rate_limited"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def rate_limited(view: F, /) -> F: ...
@overload
def rate_limited(
    limit: int = 60,
    minutes: float | None = None,
    *,
    seconds: float | None = None,
    per: timedelta | None = None,
    methods: Iterable[str] | None = None,
    ip: bool = True,
    user: bool = True,
    key: IdentityFn | None = None,
    scope: str | None = None,
    cost: int = 1,
    exempt_when: IdentityFn | None = None,
    dry_run: bool = False,
    fail_closed: bool = False,
    config: str | None = None,
) -> Callable[[F], F]: ...
def rate_limited(
    limit: Any = 60,
    minutes: float | None = None,
    *,
    seconds: float | None = None,
    per: timedelta | None = None,
    methods: Iterable[str] | None = None,
    ip: bool = True,
    user: bool = True,
    key: IdentityFn | None = None,
    scope: str | None = None,
    cost: int = 1,
    exempt_when: IdentityFn | None = None,
    dry_run: bool = False,
    fail_closed: bool = False,
    config: str | None = None,
) -> Any:
    """Allow ``limit`` requests per window per client, refuse the rest with 429.

    Args:
        limit: requests allowed per window (a burst of ``limit`` is allowed).
        minutes, seconds, per: the window (default one minute).
        methods: only these methods are counted (default: all).
        ip: keep a budget per client IP. user: and one per authenticated user
            (from ``Guards.user_loader``; anonymous requests only get the IP budget).
        key: a custom identity callable (no arguments) replacing ip/user.
        scope: share one budget across every endpoint naming the same scope.
        cost: how much of the budget one request uses.
        exempt_when: a callable; when it returns true the request is not counted.
        dry_run: count and send headers, never refuse.
        fail_closed: answer 503 instead of letting requests through when the store is down.
        config: an ``app.config`` key read at start-up for the limit and window
            (``"300/minute"`` or ``(limit, seconds)``); the other values are the
            fallback when the key is unset. Lets a service set limits per deployment.

    The algorithm is GCRA (a token bucket in one timestamp): a client may burst
    ``limit`` requests, then earns one back every ``window / limit``; a client
    that stays under the average rate is never refused, however long it calls.
    """
    if callable(limit) and minutes is None:
        return rate_limited()(limit)
    limit = positive_int("rate_limited", "limit", limit)
    window_ms = window_ms_of(
        "rate_limited",
        1 if minutes is None and seconds is None and per is None else minutes,
        seconds,
        per,
    )
    if not (ip or user or key):
        raise ConfigurationError(
            "@rate_limited: ip=False, user=False and no key= leaves no identity to count by."
        )
    cost = positive_int("rate_limited", "cost", cost)
    countable("@rate_limited", limit, window_ms)
    if cost > limit:
        raise ValueError(
            f"@rate_limited: cost={cost} exceeds limit={limit}; no request could pass."
        )
    spec = RateSpec(
        limit=limit,
        window_ms=window_ms,
        methods=methods_of("rate_limited", methods),
        ip=bool(ip),
        user=bool(user),
        key=callable_or_none("rate_limited", "key", key),
        scope=scope_of("rate_limited", scope),
        cost=cost,
        exempt_when=callable_or_none("rate_limited", "exempt_when", exempt_when),
        dry_run=bool(dry_run),
        fail_closed=bool(fail_closed),
        config=config_key("rate_limited", config),
    )

    def decorate(view: F) -> F:
        mark(view).rates.append(spec)
        return view

    return decorate


@overload
def protected(view: F, /) -> F: ...
@overload
def protected(
    limit: int = 10,
    minutes: float | None = None,
    *,
    seconds: float | None = None,
    per: timedelta | None = None,
    statuses: Collection[int] = (404,),
    block_status: int = 404,
    reset_on_success: bool = False,
    escalate: bool = False,
    max_ban: timedelta = timedelta(days=1),
    scope: str | None = None,
    config: str | None = None,
    key: IdentityFn | None = None,
    block_detail: str | None = None,
) -> Callable[[F], F]: ...
def protected(
    limit: Any = 10,
    minutes: float | None = None,
    *,
    seconds: float | None = None,
    per: timedelta | None = None,
    statuses: Collection[int] = (404,),
    block_status: int = 404,
    reset_on_success: bool = False,
    escalate: bool = False,
    max_ban: timedelta = timedelta(days=1),
    scope: str | None = None,
    config: str | None = None,
    key: IdentityFn | None = None,
    block_detail: str | None = None,
) -> Any:
    """Ban a client IP from this endpoint after ``limit`` failures in the window.

    Args:
        limit: failures allowed; the next request is blocked (exactly ``limit``).
        minutes, seconds, per: the window, counted from the first failure (default 60 min).
        statuses: response statuses that count as failures (raised HTTP errors too).
        block_status: what a banned client gets (404 by default: a scanner learns
            nothing; it is raised as werkzeug's ``NotFound``, so the app's own 404
            handling answers it, exactly like a path that does not exist).
        reset_on_success: a 2xx clears the client's failures (with ``key``: only
            its failures on that key).
        escalate: each repeat offence doubles the ban, up to ``max_ban``.
        scope: share one failure budget across endpoints naming the same scope.
        config: an ``app.config`` key read at start-up for the failures and window
            (``"10/hour"`` or ``(limit, seconds)``), as for ``rate_limited``.
        key: a callable (no arguments, sync or async) naming what the request
            attempts, e.g. the account a login names. Failures are then counted per
            client IP AND per key (across every address, so rotating addresses does
            not help), each allowed ``limit``; a success with ``reset_on_success``
            clears only this key's failures from this client. Each attempt is
            reserved before the view runs, so concurrent attempts never exceed
            ``limit``. A request whose key is ``None`` counts for its IP only.
        block_detail: the ``detail`` of the block response (problem+json), e.g.
            ``"Too many failed logins."``; a retry hint is appended.

    A banned client never reaches the view (nor the database behind it).
    """
    if callable(limit) and minutes is None:
        return protected()(limit)
    limit = positive_int("protected", "limit", limit)
    window_ms = window_ms_of(
        "protected",
        60 if minutes is None and seconds is None and per is None else minutes,
        seconds,
        per,
    )
    if isinstance(statuses, int) or not statuses:
        raise TypeError(
            f"@protected: statuses= takes a non-empty collection of ints, got {statuses!r}."
        )
    codes = frozenset(statuses)
    if any(isinstance(c, bool) or not isinstance(c, int) or not 100 <= c <= 599 for c in codes):
        raise ValueError(
            f"@protected: statuses= must be HTTP status codes, got {sorted(codes, key=str)}."
        )
    if (
        isinstance(block_status, bool)
        or not isinstance(block_status, int)
        or not 400 <= block_status <= 599
    ):
        raise ValueError(
            f"@protected: block_status= must be a 4xx or 5xx code, got {block_status!r}."
        )
    if not isinstance(max_ban, timedelta) or max_ban.total_seconds() * 1000 < window_ms:
        raise ValueError("@protected: max_ban= must be a timedelta no shorter than the window.")
    if key is not None and escalate:
        raise ConfigurationError(
            "@protected: escalate=True is not available with key=: a key's failures "
            "lock it for the rest of the window, which does not escalate."
        )
    if block_detail is not None and (not isinstance(block_detail, str) or not block_detail):
        raise TypeError(f"@protected: block_detail= must be a non-empty str, got {block_detail!r}.")
    spec = ProtectSpec(
        limit=limit,
        window_ms=window_ms,
        statuses=codes,
        block_status=block_status,
        reset_on_success=bool(reset_on_success),
        escalate=bool(escalate),
        max_ban_ms=round(max_ban.total_seconds() * 1000),
        scope=scope_of("protected", scope),
        config=config_key("protected", config),
        key=callable_or_none("protected", "key", key),
        block_detail=block_detail,
    )

    def decorate(view: F) -> F:
        mark(view).protects.append(spec)
        return view

    return decorate


@overload
def cached(view: F, /) -> F: ...
@overload
def cached(
    minutes: float | None = None,
    *,
    seconds: float | None = None,
    per: timedelta | None = None,
    stale: float | timedelta | None = None,
    unique_per_user: bool = False,
    namespace: str | None = None,
    headers: Iterable[str] = (),
) -> Callable[[F], F]: ...
def cached(
    minutes: Any = None,
    *,
    seconds: float | None = None,
    per: timedelta | None = None,
    stale: float | timedelta | None = None,
    unique_per_user: bool = False,
    namespace: str | None = None,
    headers: Iterable[str] = (),
) -> Any:
    """Cache the view's cacheable GET responses (HEAD is served from them).

    Args:
        minutes, seconds, per: how long an entry is fresh (default 5 minutes).
        stale: seconds (or a timedelta) an entry may then be served stale while
            one request refreshes it (default: as long as it was fresh; 0 disables).
        unique_per_user: one entry per user (from ``Guards.user_loader``); a request
            that carries credentials but has no resolvable user is not cached.
        namespace: invalidation group (default: the endpoint); see ``Guards.invalidate``.
        headers: extra response headers to keep besides the content headers.
    """
    if callable(minutes):
        return cached()(minutes)
    window_ms = window_ms_of(
        "cached",
        5 if minutes is None and seconds is None and per is None else minutes,
        seconds,
        per,
    )
    ttl = max(1, round(window_ms / 1000))
    if stale is None:
        stale_s = ttl
    elif isinstance(stale, timedelta):
        stale_s = round(stale.total_seconds())
    else:
        stale_s = round(number("cached", "stale", stale))
    if stale_s < 0:
        raise ValueError(f"@cached: stale= must not be negative, got {stale!r}.")
    if namespace is not None and (
        not isinstance(namespace, str) or not namespace or " " in namespace
    ):
        raise ValueError(
            f"@cached: namespace= must be a non-empty name without spaces, got {namespace!r}."
        )
    if isinstance(headers, str):
        raise TypeError("@cached: headers= takes a list of header names, not a string.")
    spec = CacheSpec(
        ttl=ttl,
        stale=stale_s,
        unique_per_user=bool(unique_per_user),
        namespace=namespace,
        extra_headers=frozenset(h.lower() for h in headers),
    )

    def decorate(view: F) -> F:
        marks = mark(view)
        if marks.cache is not None:
            raise ConfigurationError(f"@cached is applied twice to {view.__qualname__}.")
        marks.cache = spec
        return view

    return decorate


def precheck(check: PrecheckFn) -> Callable[[F], F]:
    """Run ``check`` before a cache hit is served (and before the view).

    The hook other code plugs into: the service's ``requires_scopes`` and a
    user's own authorization. ``check`` takes no arguments (it reads
    ``request``), may be async, and refuses by raising an ``HTTPException``.
    """
    check = callable_or_none("precheck", "check", check)  # type: ignore[assignment]

    def decorate(view: F) -> F:
        mark(view).prechecks.append(check)
        return view

    return decorate
