"""The decorators: ``@rate_limited``, ``@protected``, ``@cached``, ``@precheck``, ``@exempt``.

Each checks its arguments, records what it asks for on the view (a frozen spec in the
view's :class:`Marks`) and returns the view unchanged. Because a decorator only marks
the function, the order in which they are written does not matter, nor whether they
sit above or below ``@app.route``: :class:`~quart_api.guards.Guards` reads the marks
and wraps each marked view once, with the checks always in the same order (limits and
bans, then pre-checks, then the cache, then the view).

Every argument is checked here, when the decorator runs at import time, so a typo fails
as the module loads rather than on the first request in production; each error names
the decorator and the value.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar, overload

from quart_api.guards._cache_entries import HEADER_NAME, NEVER_KEPT_HEADERS
from quart_api.guards.errors import ConfigurationError
from quart_api.guards.rates import countable, parse_rates

__all__ = [
    "CacheSpec",
    "IdentityFn",
    "Marks",
    "PrecheckFn",
    "ProtectSpec",
    "RateSpec",
    "cached",
    "exempt",
    "marks_of",
    "precheck",
    "protected",
    "rate_limited",
]

F = TypeVar("F", bound=Callable[..., Any])
#: An identity or predicate callable: sync or async, no arguments, reads ``request``.
IdentityFn = Callable[[], Any]
#: A pre-check: sync or async, no arguments; raises an HTTPException to refuse.
PrecheckFn = Callable[[], Any]

_MARK_ATTRIBUTE = "__quart_api_guards__"
#: A scope is part of keys (no braces: Redis Cluster hash tags) and of ``RateLimit-Policy``
#: items, quoted (RFC 8941 strings: printable ASCII, no quote or backslash).
_SCOPE_NAME = re.compile(r'[^\x00-\x20"\\{}\x7f-\U0010ffff]+')
_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


# -- what the decorators record --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateSpec:
    """One limit of ``@rate_limited`` as written; keys are built per request."""

    limit: int
    window_ms: int
    methods: frozenset[str] | None = None
    ip: bool = True
    user: bool = True
    key: IdentityFn | None = None
    scope: str | None = None
    cost: int = 1
    exempt_when: IdentityFn | None = None
    dry_run: bool = False
    fail_closed: bool = False
    #: an ``app.config`` key whose rate replaces ``limit`` and ``window_ms`` at start-up
    config: str | None = None


@dataclass(frozen=True, slots=True)
class ProtectSpec:
    """One ``@protected`` as written (``key``: also count per that key, across clients)."""

    limit: int
    window_ms: int
    statuses: frozenset[int]
    block_status: int
    reset_on_success: bool
    escalate: bool
    max_ban_ms: int
    scope: str | None
    config: str | None = None
    key: IdentityFn | None = None
    block_detail: str | None = None


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One ``@cached`` as written."""

    ttl: int
    stale: int
    unique_per_user: bool
    namespace: str | None
    extra_headers: frozenset[str]
    #: ``query=``: the query names that make distinct entries (None: every name)
    query_names: tuple[str, ...] | None = None


@dataclass(slots=True)
class Marks:
    """Everything the guard decorators recorded on one view."""

    rates: list[RateSpec] = field(default_factory=list)
    protects: list[ProtectSpec] = field(default_factory=list)
    cache: CacheSpec | None = None
    prechecks: list[PrecheckFn] = field(default_factory=list)
    #: ``@exempt``: no default or blueprint limits (its own ``@rate_limited`` still apply)
    exempt: bool = False


def marks_of(view: Callable[..., Any]) -> Marks | None:
    """The marks on ``view`` (also found through ``functools.wraps`` copies)."""
    marks = getattr(view, _MARK_ATTRIBUTE, None)
    return marks if isinstance(marks, Marks) else None


def _mark(view: F) -> Marks:
    if not callable(view):
        raise TypeError(f"A guard decorates a view function, not {view!r}.")
    marks = marks_of(view)
    if marks is None:
        marks = Marks()
        setattr(view, _MARK_ATTRIBUTE, marks)
    return marks


# -- the decorators ----------------------------------------------------------------------


@overload
def rate_limited(view: F, /) -> F: ...
@overload
def rate_limited(
    limit: int | str = 60,
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
        limit: requests allowed per window (a burst of ``limit`` is allowed), or a
            rate string: ``"50/hour"``, several as ``"10/second, 1000/hour"``
            (``N/second|minute|hour|day``), each a limit of its own.
        minutes, seconds, per: the window (default one minute; not with a rate string).
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
    if isinstance(limit, str):
        if minutes is not None or seconds is not None or per is not None:
            raise TypeError(
                f"@rate_limited({limit!r}): the rate string names the window; "
                "leave out minutes=, seconds= and per=."
            )
        if config is not None:
            raise TypeError(f"@rate_limited({limit!r}): config= takes the place of a rate string.")
        rates = [(n, s * 1000) for n, s in parse_rates(limit, "@rate_limited: rate")]
    else:
        limit = _positive_int("rate_limited", "limit", limit)
        default_minutes = 1 if minutes is None and seconds is None and per is None else minutes
        rates = [(limit, _window_ms("rate_limited", default_minutes, seconds, per))]
    if not (ip or user or key):
        raise ConfigurationError(
            "@rate_limited: ip=False, user=False and no key= leaves no identity to count by."
        )
    cost = _positive_int("rate_limited", "cost", cost)
    written = RateSpec(
        limit=1,
        window_ms=1,
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
    specs = []
    for count, window_ms in rates:
        countable("@rate_limited", count, window_ms)
        if cost > count:
            raise ValueError(
                f"@rate_limited: cost={cost} exceeds limit={count}; no request could pass."
            )
        specs.append(replace(written, limit=count, window_ms=window_ms))

    def decorate(view: F) -> F:
        _mark(view).rates.extend(specs)
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
        limit: failures allowed; the next request is blocked (exactly ``limit``, also
            under concurrency: see the README on attempts in flight).
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
        scope=_scope("protected", scope),
        config=_config_key("protected", config),
        key=_callable_or_none("protected", "key", key),
        block_detail=block_detail,
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
    query: Iterable[str] | None = None,
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
    query: Iterable[str] | None = None,
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
        query: the query parameters the view reads, each by its first value
            (``request.args.get``). Only they make distinct entries: other names,
            and later values of a listed name, are left out of the key, so a client
            adding ``?x=<random>`` gets the cached entry instead of running the view
            and filling the cache. Leave it unset (every name and value counts) when
            the view reads parameters it cannot list, or several values of one name.
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
    for name in headers:
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise ValueError(
                f"@cached: headers= takes header names (RFC 9110 tokens), got {name!r}."
            )
        if name.lower() in NEVER_KEPT_HEADERS:
            raise ValueError(f"@cached: headers= cannot keep {name!r}: it is never stored.")
    if isinstance(query, str):
        raise TypeError("@cached: query= takes a list of parameter names, not a string.")
    query_names = None if query is None else tuple(sorted(set(query)))
    if query_names is not None and not all(isinstance(n, str) and n for n in query_names):
        raise ValueError(f"@cached: query= takes non-empty parameter names, got {query!r}.")
    spec = CacheSpec(
        ttl=ttl,
        stale=stale_s,
        unique_per_user=bool(unique_per_user),
        namespace=namespace,
        extra_headers=frozenset(h.lower() for h in headers),
        query_names=query_names,
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
    checked = _callable_or_none("precheck", "check", check)

    def decorate(view: F) -> F:
        _mark(view).prechecks.append(checked)  # type: ignore[arg-type]
        return view

    return decorate


def exempt(view: F) -> F:
    """Keep the default limits (``GUARDS_DEFAULT_LIMITS``) and blueprint limits off a route.

    The route's own ``@rate_limited``, ``@protected`` and ``@cached``, the safelist and
    the blocklist still apply.
    """
    _mark(view).exempt = True
    return view


# -- argument checks ----------------------------------------------------------------------


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
    if not math.isfinite(total):
        raise ValueError(f"@{decorator}: the window must be a finite number, got {total!r}.")
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
    parameters = inspect.signature(value).parameters.values()
    if any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in parameters
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


def _scope(decorator: str, scope: object) -> str | None:
    if scope is None:
        return None
    if not isinstance(scope, str) or not _SCOPE_NAME.fullmatch(scope):
        raise ValueError(
            f"@{decorator}: scope= must be a non-empty name of printable ASCII without "
            f"spaces, quotes, backslashes or braces, got {scope!r}."
        )
    return scope
