"""The decorators: they record intent on the view and return it unchanged.

Because a decorator only marks the function, the order in which
``@rate_limited``, ``@protected``, ``@cached`` and ``@precheck`` are written does
not matter, and writing them above or below ``@app.route`` makes no
difference: :class:`~quart_api.guards.Guards` reads the marks and wraps each
marked view once, in one place, with the checks always in the same order
(limits and bans, then pre-checks, then the cache, then the view).

Every argument is checked here, at import time, so a typo fails when the
module loads rather than on the first request in production.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, overload

from quart_api.guards.errors import ConfigurationError

__all__ = [
    "MARK_ATTRIBUTE",
    "CacheSpec",
    "Marks",
    "PrecheckFn",
    "ProtectSpec",
    "RateSpec",
    "cached",
    "marks_of",
    "precheck",
    "protected",
    "rate_from_config",
    "rate_limited",
]

F = TypeVar("F", bound=Callable[..., Any])
#: An identity or predicate callable: sync or async, no arguments, reads ``request``.
IdentityFn = Callable[[], Any]
#: A pre-check: sync or async, no arguments; raises an HTTPException to refuse.
PrecheckFn = Callable[[], Any]

MARK_ATTRIBUTE = "__quart_api_guards__"
_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


@dataclass(frozen=True, slots=True)
class RateSpec:
    """One ``@rate_limited`` as written; keys are built per request by the runner."""

    limit: int
    window_ms: int
    methods: frozenset[str] | None
    ip: bool
    user: bool
    key: IdentityFn | None
    scope: str | None
    cost: int
    exempt_when: IdentityFn | None
    dry_run: bool
    fail_closed: bool
    config: str | None = None


@dataclass(frozen=True, slots=True)
class ProtectSpec:
    """One ``@protected`` as written."""

    limit: int
    window_ms: int
    statuses: frozenset[int]
    block_status: int
    reset_on_success: bool
    escalate: bool
    max_ban_ms: int
    scope: str | None
    config: str | None = None


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One ``@cached`` as written."""

    ttl: int
    stale: int
    unique_per_user: bool
    namespace: str | None
    extra_headers: frozenset[str]


@dataclass(slots=True)
class Marks:
    """Everything the guard decorators recorded on one view."""

    rates: list[RateSpec] = field(default_factory=list)
    protects: list[ProtectSpec] = field(default_factory=list)
    cache: CacheSpec | None = None
    prechecks: list[PrecheckFn] = field(default_factory=list)


def marks_of(view: Callable[..., Any]) -> Marks | None:
    """The marks on ``view`` (also found through ``functools.wraps`` copies)."""
    marks = getattr(view, MARK_ATTRIBUTE, None)
    return marks if isinstance(marks, Marks) else None


def _mark(view: F) -> Marks:
    if not callable(view):
        raise TypeError(f"A guard decorates a view function, not {view!r}.")
    marks = marks_of(view)
    if marks is None:
        marks = Marks()
        setattr(view, MARK_ATTRIBUTE, marks)
    return marks


def _window_ms(
    decorator: str, minutes: float | None, seconds: float | None, per: timedelta | None
) -> int:
    given = [v for v in (minutes, seconds, per) if v is not None]
    if len(given) > 1:
        raise TypeError(f"@{decorator}: give one of minutes=, seconds= or per=, not several.")
    if per is not None:
        if not isinstance(per, timedelta):
            raise TypeError(f"@{decorator}: per= must be a datetime.timedelta, not {per!r}.")
        total = per.total_seconds()
    elif seconds is not None:
        total = _number(decorator, "seconds", seconds)
    else:
        total = 60.0 * _number(decorator, "minutes", minutes)
    ms = round(total * 1000)
    if ms < 1:
        raise ValueError(f"@{decorator}: the window must be positive, got {total!r} seconds.")
    return ms


def _number(decorator: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"@{decorator}: {name}= must be a number, not {value!r}.")
    return float(value)


def _positive_int(decorator: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"@{decorator}: {name}= must be an int, not {value!r}.")
    if value < 1:
        raise ValueError(f"@{decorator}: {name}= must be at least 1, got {value!r}.")
    return value


def _callable_or_none(decorator: str, name: str, value: object) -> IdentityFn | None:
    if value is None:
        return None
    if not callable(value):
        raise TypeError(f"@{decorator}: {name}= must be a callable, not {value!r}.")
    if inspect.signature(value).parameters and any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in inspect.signature(value).parameters.values()
    ):
        raise TypeError(f"@{decorator}: {name}= is called with no arguments; {value!r} needs some.")
    return value


def _methods(decorator: str, methods: Iterable[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, str):
        raise TypeError(
            f"@{decorator}: methods= takes a list of methods, not the string {methods!r}."
        )
    normalized = frozenset(m.upper() for m in methods)
    unknown = normalized - _HTTP_METHODS
    if unknown:
        raise ValueError(f"@{decorator}: unknown HTTP methods {sorted(unknown)}.")
    if not normalized:
        raise ValueError(f"@{decorator}: methods= is empty; leave it out to limit every method.")
    return normalized


def _config_key(decorator: str, key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise TypeError(f"@{decorator}: config= names an app.config key, got {key!r}.")
    return key


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def countable(where: str, limit: int, window_ms: int) -> None:
    """GCRA spaces requests ``window / limit`` apart, counted in whole microseconds.

    Above one request per microsecond the spacing rounds to zero and nothing
    would ever be counted: refuse such a limit instead of silently not limiting.
    """
    if window_ms * 1000 < limit:
        raise ValueError(
            f"{where}: {limit} requests per {window_ms} ms is more than one per "
            "microsecond, which cannot be counted; use a longer window or a lower limit."
        )


def rate_from_config(key: str, value: object) -> tuple[int, int]:
    """``(limit, window_ms)`` from a config value ``"N/period"`` or ``(N, seconds)``."""
    parsed: tuple[int, int] | None = None
    if isinstance(value, str):
        match = _RATE.match(value)
        if match and int(match.group(1)) >= 1:
            parsed = int(match.group(1)), _PERIODS[match.group(2).lower()] * 1000
    elif (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
        and isinstance(value[0], int)
    ):
        parsed = value[0], round(value[1] * 1000)
    if parsed is not None:
        countable(f"app.config[{key!r}]", *parsed)
        return parsed
    raise ConfigurationError(
        f"app.config[{key!r}]={value!r} is not a rate: use 'N/second|minute|hour|day' "
        "or (limit, seconds)."
    )


def _scope(decorator: str, scope: object) -> str | None:
    if scope is None:
        return None
    if not isinstance(scope, str) or not scope or any(c in scope for c in " {}\r\n\t"):
        raise ValueError(
            f"@{decorator}: scope= must be a non-empty name without spaces or braces, "
            f"got {scope!r}."
        )
    return scope


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
    limit = _positive_int("rate_limited", "limit", limit)
    window_ms = _window_ms(
        "rate_limited",
        1 if minutes is None and seconds is None and per is None else minutes,
        seconds,
        per,
    )
    if not (ip or user or key):
        raise ConfigurationError(
            "@rate_limited: ip=False, user=False and no key= leaves no identity to count by."
        )
    cost = _positive_int("rate_limited", "cost", cost)
    countable("@rate_limited", limit, window_ms)
    if cost > limit:
        raise ValueError(
            f"@rate_limited: cost={cost} exceeds limit={limit}; no request could pass."
        )
    spec = RateSpec(
        limit=limit,
        window_ms=window_ms,
        methods=_methods("rate_limited", methods),
        ip=bool(ip),
        user=bool(user),
        key=_callable_or_none("rate_limited", "key", key),
        scope=_scope("rate_limited", scope),
        cost=cost,
        exempt_when=_callable_or_none("rate_limited", "exempt_when", exempt_when),
        dry_run=bool(dry_run),
        fail_closed=bool(fail_closed),
        config=_config_key("rate_limited", config),
    )

    def decorate(view: F) -> F:
        _mark(view).rates.append(spec)
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
) -> Any:
    """Ban a client IP from this endpoint after ``limit`` failures in the window.

    Args:
        limit: failures allowed; the next request is blocked (exactly ``limit``).
        minutes, seconds, per: the window, counted from the first failure (default 60 min).
        statuses: response statuses that count as failures (raised HTTP errors too).
        block_status: what a banned client gets (404 by default: a scanner learns nothing).
        reset_on_success: a 2xx clears the client's failures (login-style use).
        escalate: each repeat offence doubles the ban, up to ``max_ban``.
        scope: share one failure budget across endpoints naming the same scope.
        config: an ``app.config`` key read at start-up for the failures and window
            (``"10/hour"`` or ``(limit, seconds)``), as for ``rate_limited``.

    A banned client never reaches the view (nor the database behind it).
    """
    if callable(limit) and minutes is None:
        return protected()(limit)
    limit = _positive_int("protected", "limit", limit)
    window_ms = _window_ms(
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
    spec = ProtectSpec(
        limit=limit,
        window_ms=window_ms,
        statuses=codes,
        block_status=block_status,
        reset_on_success=bool(reset_on_success),
        escalate=bool(escalate),
        max_ban_ms=round(max_ban.total_seconds() * 1000),
        scope=_scope("protected", scope),
        config=_config_key("protected", config),
    )

    def decorate(view: F) -> F:
        _mark(view).protects.append(spec)
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
    window_ms = _window_ms(
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
        stale_s = round(_number("cached", "stale", stale))
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
        marks = _mark(view)
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
    check = _callable_or_none("precheck", "check", check)  # type: ignore[assignment]

    def decorate(view: F) -> F:
        _mark(view).prechecks.append(check)
        return view

    return decorate
