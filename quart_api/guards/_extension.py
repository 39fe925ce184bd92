"""``Guards``: the Quart extension that turns decorator marks into checks.

Settings have one precedence: constructor argument > ``app.config`` key >
:data:`DEFAULTS`. Per-app state (resolved settings, stores, breakers) lives in
``app.extensions["guards"]``, never on the ``Guards`` instance, so one
instance can serve several apps.

Only marked views are wrapped, once, when the app starts serving (or at its
first request under the test client); unguarded routes run exactly as if the
extension were not installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import multiprocessing
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

from quart import Quart

from quart_api.guards._breaker import Breaker
from quart_api.guards._cache import DecodedEntries
from quart_api.guards._specs import marks_of
from quart_api.guards.errors import ConfigurationError, redact
from quart_api.guards.stores.base import CacheStore, CounterStore, StoreError

__all__ = ["DEFAULTS", "UNSET", "Guards", "GuardsState", "default_key_prefix", "state_of"]

log = logging.getLogger("quart_api.guards")

UserLoader = Callable[[], Awaitable[str | None] | str | None]
L = TypeVar("L", bound=UserLoader)


class _Unset:
    """Tells "not given" apart from ``None`` (which can be a real value)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final[Any] = _Unset()

#: Defaults for every setting, by ``app.config`` key.
DEFAULTS: Final[dict[str, Any]] = {
    "REDIS_URL": None,
    "MEMCACHED_SERVERS": None,
    "GUARDS_ENABLED": True,
    "STORE_TIMEOUT": 0.05,
    "TRUSTED_PROXY_COUNT": 0,
    "GUARDS_IPV6_PREFIX": 64,
    "GUARDS_KEY_PREFIX": None,  # None: derived from the app's name (default_key_prefix)
    "GUARDS_LEGACY_HEADERS": False,
    "GUARDS_BREAKER_COOLDOWN": 1.0,
    "GUARDS_PROTECT_UNROUTED": None,
}


@dataclass(slots=True)
class GuardsState:
    """Everything one app's guards need at request time."""

    guards: Guards
    enabled: bool
    counters: CounterStore
    cache: CacheStore
    counter_breaker: Breaker
    cache_breaker: Breaker
    trusted_proxy_count: int
    ipv6_prefix: int
    key_prefix: str
    legacy_headers: bool
    protect_unrouted: tuple[int, int] | None
    clock: Callable[[], float]
    generations: dict[str, tuple[int, float]] = field(default_factory=dict)
    generation_ttl: float = 1.0
    installed: bool = False
    #: per-process single flight: cache key -> future of the refreshed entry bytes.
    inflight: dict[bytes, Any] = field(default_factory=dict)
    #: entries decoded lately, by key (a hit of an unchanged entry skips decoding)
    decoded: DecodedEntries = field(default_factory=DecodedEntries)
    warned: set[str] = field(default_factory=set)

    def warn_once(self, topic: str, message: str, *args: object) -> None:
        if topic not in self.warned:
            self.warned.add(topic)
            log.warning(message, *args)


class Guards:
    """Rate limiting, brute-force protection and response caching for Quart.

    Args:
        app: the app to install into now (or call :meth:`init_app` later).
        redis_url: counters store; ``None`` keeps them in process memory.
        memcached_servers: ``"host:port[,host:port]"``; ``None`` caches in memory.
        enabled: ``False`` turns every guard into a no-op (a user's own tests).
        store_timeout: seconds one store call may take before the guard fails open.
        trusted_proxy_count: proxies in front whose ``X-Forwarded-For`` entry is believed.
        ipv6_prefix: IPv6 clients share limits per network of this prefix length.
        key_prefix: prefix of every store key; by default derived from the app's
            name, so apps sharing one Redis or memcached never share keys.
        legacy_headers: also send ``RateLimit-Limit/-Remaining/-Reset``.
        breaker_cooldown: seconds a failing store is skipped before a probe.
        protect_unrouted: ``(failures, seconds)``: ban clients probing unknown paths.
        counter_store, cache_store: ready store objects, overriding the URLs.
        clock: wall clock for cache freshness (tests inject one).
    """

    def __init__(
        self,
        app: Quart | None = None,
        *,
        redis_url: str | None = UNSET,
        memcached_servers: str | None = UNSET,
        enabled: bool = UNSET,
        store_timeout: float = UNSET,
        trusted_proxy_count: int = UNSET,
        ipv6_prefix: int = UNSET,
        key_prefix: str = UNSET,
        legacy_headers: bool = UNSET,
        breaker_cooldown: float = UNSET,
        protect_unrouted: tuple[int, int] | None = UNSET,
        counter_store: CounterStore | None = None,
        cache_store: CacheStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._given: dict[str, Any] = {
            "REDIS_URL": redis_url,
            "MEMCACHED_SERVERS": memcached_servers,
            "GUARDS_ENABLED": enabled,
            "STORE_TIMEOUT": store_timeout,
            "TRUSTED_PROXY_COUNT": trusted_proxy_count,
            "GUARDS_IPV6_PREFIX": ipv6_prefix,
            "GUARDS_KEY_PREFIX": key_prefix,
            "GUARDS_LEGACY_HEADERS": legacy_headers,
            "GUARDS_BREAKER_COOLDOWN": breaker_cooldown,
            "GUARDS_PROTECT_UNROUTED": protect_unrouted,
        }
        self._counter_store = counter_store
        self._cache_store = cache_store
        self._clock = clock
        self._user_loader: UserLoader | None = None
        if app is not None:
            self.init_app(app)

    # -- set-up -------------------------------------------------------------

    def init_app(self, app: Quart) -> Guards:
        """Resolve settings, create (unconnected) stores, hook the app's lifecycle."""
        from quart_api.guards.stores.uri import cache_store_from_servers, counter_store_from_url

        config = {key: self._setting(app, key) for key in DEFAULTS}
        timeout = _positive_float("STORE_TIMEOUT", config["STORE_TIMEOUT"])
        # `is None`, never `or`: an empty store is falsy (it has a length).
        counters = self._counter_store
        if counters is None:
            counters = counter_store_from_url(config["REDIS_URL"], timeout=timeout)
        cache = self._cache_store
        if cache is None:
            cache = cache_store_from_servers(config["MEMCACHED_SERVERS"], timeout=timeout)
        key_prefix = config["GUARDS_KEY_PREFIX"]
        cooldown = _positive_float("GUARDS_BREAKER_COOLDOWN", config["GUARDS_BREAKER_COOLDOWN"])
        state = GuardsState(
            guards=self,
            enabled=bool(config["GUARDS_ENABLED"]),
            counters=counters,
            cache=cache,
            counter_breaker=Breaker(counters.kind, cooldown=cooldown),
            cache_breaker=Breaker(cache.kind, cooldown=cooldown),
            trusted_proxy_count=_non_negative_int(
                "TRUSTED_PROXY_COUNT", config["TRUSTED_PROXY_COUNT"]
            ),
            ipv6_prefix=_prefix_length(config["GUARDS_IPV6_PREFIX"]),
            key_prefix=default_key_prefix(app) if key_prefix is None else _key_prefix(key_prefix),
            legacy_headers=bool(config["GUARDS_LEGACY_HEADERS"]),
            protect_unrouted=_unrouted(config["GUARDS_PROTECT_UNROUTED"]),
            clock=self._clock,
        )
        app.extensions["guards"] = state
        app.before_serving(self._make_before_serving(app))
        app.after_serving(self._make_after_serving(app))
        app.before_request(self._make_first_request_hook(app))
        if state.protect_unrouted is not None:
            from quart_api.guards._unrouted import install_unrouted_protection

            install_unrouted_protection(app, state)
        return self

    def _setting(self, app: Quart, key: str) -> Any:
        given = self._given[key]
        if given is not UNSET:
            return given
        return app.config.get(key, DEFAULTS[key])

    def user_loader(self, loader: L) -> L:
        """Register who the current user is (sync or async, no arguments).

        It returns a stable user id (a string) or ``None`` for anonymous
        requests; per-user limits and per-user cache entries key on it.
        """
        if not callable(loader):
            raise TypeError(f"user_loader takes a callable, not {loader!r}.")
        self._user_loader = loader
        return loader

    async def load_user(self) -> str | None:
        """The current user's id from the registered loader (None without one)."""
        loader = self._user_loader
        if loader is None:
            return None
        result = loader()
        if inspect.isawaitable(result):
            result = await result
        return None if result is None else str(result)

    # -- lifecycle ----------------------------------------------------------

    def _make_before_serving(self, app: Quart) -> Callable[[], Awaitable[None]]:
        async def before_serving() -> None:
            state = state_of(app)
            self.install(app)
            await self._warn_of_silent_stores(app, state)
            if state.counters.kind == "memory" and _sibling_workers() > 1:
                log.warning(
                    "Guards use in-process memory stores in one of %d worker processes: "
                    "each keeps its own counters and cache, so limits multiply. "
                    "Set REDIS_URL (and MEMCACHED_SERVERS) for production.",
                    _sibling_workers(),
                )

        return before_serving

    async def _warn_of_silent_stores(self, app: Quart, state: GuardsState) -> None:
        """One warning when a configured store does not answer as serving starts.

        Each ping is bounded by the store's own timeouts (``STORE_TIMEOUT``, plus its
        connect timeout for a first connection), so start-up waits at most that long.
        """
        stores = [
            (key, store, effect)
            for key, store, effect in (
                ("REDIS_URL", state.counters, "rate limits and bans are off"),
                ("MEMCACHED_SERVERS", state.cache, "responses are not cached"),
            )
            if store.kind != "memory"
        ]
        outcomes = await asyncio.gather(
            *(store.ping() for _, store, _ in stores), return_exceptions=True
        )
        silent = []
        for (key, _, effect), outcome in zip(stores, outcomes, strict=True):
            if isinstance(outcome, StoreError):
                shown = redact(str(self._setting(app, key) or ""))
                silent.append(f"{key}={shown} ({outcome}): {effect}")
            elif isinstance(outcome, BaseException):
                raise outcome
        if silent:
            log.warning(
                "Guards' stores do not answer at start-up: %s. The guards fail open, "
                "so this lasts until they answer.",
                "; ".join(silent),
            )

    def _make_after_serving(self, app: Quart) -> Callable[[], Awaitable[None]]:
        async def after_serving() -> None:
            state = state_of(app)
            for store in (state.counters, state.cache):
                try:
                    await store.close()
                except StoreError as error:
                    log.warning("closing the %s store failed: %s", store.kind, error)

        return after_serving

    def _make_first_request_hook(self, app: Quart) -> Callable[[], None]:
        def wrap_views_once() -> None:
            self.install(app)
            funcs = app.before_request_funcs.get(None, [])
            # Replace the list rather than mutate it: Quart may be iterating it now.
            app.before_request_funcs[None] = [f for f in funcs if f is not wrap_views_once]

        return wrap_views_once

    def install(self, app: Quart) -> None:
        """Wrap every marked view of ``app`` (idempotent; runs at start-up)."""
        from quart_api.guards._runner import guard_view, is_guarded

        state = state_of(app)
        for endpoint, view in list(app.view_functions.items()):
            marks = marks_of(view)
            if marks is None or is_guarded(view):
                continue
            app.view_functions[endpoint] = guard_view(app, state, endpoint, view, marks)
        state.installed = True

    # -- operations for apps, CLIs and tests --------------------------------

    async def reset(self, app: Quart | None = None) -> None:
        """Forget every counter, ban and cache entry of this app's guards."""
        state = state_of(_app(app))
        await state.counters.delete_matching(f"{state.key_prefix}:*")
        await state.cache.clear()
        state.generations.clear()

    async def unban(self, address: str, app: Quart | None = None) -> int:
        """Clear bans, failure and rate counters of one client address; returns keys removed.

        ``address`` is any spelling of an IP address (a port, brackets, IPv4-mapped
        IPv6); an IPv6 address clears its whole network (``GUARDS_IPV6_PREFIX``), as
        the limits count it. Anything else raises ``ValueError``: a glob pattern
        never reaches the store. Failures counted against an account (``@protected``
        with ``key=``) stay: they belong to the account, not to the address.
        """
        from quart_api.guards._identity import address_key, parse_address

        state = state_of(_app(app))
        ip = parse_address(address)
        if ip is None:
            raise ValueError(f"{address!r} is not an IP address")
        # Typed keys contain no glob characters, and user and custom keys are escaped,
        # so the pattern matches this address's keys and nothing else.
        pattern = f"{state.key_prefix}:*{{{address_key(ip, state.ipv6_prefix)}}}*"
        return await state.counters.delete_matching(pattern)

    async def invalidate(self, namespace: str, app: Quart | None = None) -> None:
        """Drop every cached response of ``namespace`` (one ``incr``, O(1))."""
        from quart_api.guards._cached_view import invalidate_namespace

        await invalidate_namespace(state_of(_app(app)), namespace)

    async def health(self, app: Quart | None = None) -> dict[str, str]:
        """``{"redis": "ok"|"down"|"memory", "memcached": ...}`` for ``/readyz``.

        ``"memory"``: the store is this process's own memory (the setting is unset),
        which is always up but shared with no other worker or host.
        """
        state = state_of(_app(app))
        report: dict[str, str] = {}
        for name, store in (("redis", state.counters), ("memcached", state.cache)):
            if store.kind == "memory":
                report[name] = "memory"
                continue
            try:
                await store.ping()
            except StoreError:
                report[name] = "down"
            else:
                report[name] = "ok"
        return report


def _sibling_workers() -> int:
    """How many processes our parent started like us (hypercorn workers); 1 if unknown.

    A server that runs one worker is fine with memory stores; only several
    workers split the counters. Linux's /proc tells; elsewhere we cannot know.
    Only children running our command line count (numbers aside: spawned workers
    differ in their pipe handles): multiprocessing also starts a resource tracker
    beside the workers, which made one worker look like two.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return 1
    try:
        with open(f"/proc/{parent.pid}/task/{parent.pid}/children") as children:
            pids = children.read().split()
    except OSError:
        return 1
    ours = _command_shape("self")
    return max(1, sum(1 for pid in pids if ours is not None and _command_shape(pid) == ours))


def _command_shape(pid: str) -> bytes | None:
    """A process's command line with its digits removed, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return re.sub(rb"\d+", b"", cmdline.read())
    except OSError:
        return None


def state_of(app: Quart) -> GuardsState:
    """The guards state of ``app``; ``RuntimeError`` when Guards is not installed on it."""
    state = app.extensions.get("guards")
    if not isinstance(state, GuardsState):
        raise RuntimeError("Guards is not installed on this app: call Guards(app) first.")
    return state


def _app(app: Quart | None) -> Quart:
    if app is not None:
        return app
    from quart import current_app

    return cast(Quart, current_app._get_current_object())  # type: ignore[attr-defined]


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"Guards setting {key}={value!r} must be a positive number.")
    return float(value)


def _non_negative_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"Guards setting {key}={value!r} must be an int >= 0.")
    return value


def _prefix_length(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 128:
        raise ConfigurationError(f"Guards setting GUARDS_IPV6_PREFIX={value!r} must be 1..128.")
    return value


_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def default_key_prefix(app: Quart) -> str:
    """The key prefix of ``app`` when none is set: readable, and unique per app.

    Derived from ``app.name`` (its import name, or the script it runs from), so it is
    the same in every worker and host of one app and differs between apps sharing a
    Redis or memcached. A hash of the whole name keeps two names that shorten alike
    apart; the result is at most 33 characters of ``[A-Za-z0-9_.-]``.
    """
    name = app.name
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[-24:]
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return f"{readable}-{digest}"


def _key_prefix(value: Any) -> str:
    if not isinstance(value, str) or not _KEY_PREFIX.fullmatch(value):
        raise ConfigurationError(
            f"Guards setting GUARDS_KEY_PREFIX={value!r} must be 1 to 64 characters of "
            "letters, digits, '_', '.' and '-'."
        )
    return value


def _unrouted(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigurationError(
            f"Guards setting GUARDS_PROTECT_UNROUTED={value!r} must be (failures, seconds)."
        )
    return (value[0], value[1])
