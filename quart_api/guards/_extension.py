"""``Guards``: the Quart extension that turns decorator marks into checks.

Settings have one precedence: constructor argument > ``app.config`` key >
:data:`~quart_api.guards.config.DEFAULTS`. Per-app state (resolved settings, stores,
breakers) lives in ``app.extensions["guards"]``, never on the ``Guards`` instance, so
one instance can serve several apps.

When the app starts serving (or at its first request under the test client), every
view that asks for a guard is wrapped once by the pipeline (``_pipeline``): the
views with guard marks, and, when default or blueprint limits are set, every route
they cover. A route that nothing covers runs exactly as if the extension were not
installed; so does every route when neither ``GUARDS_BLOCKLIST`` nor
``protect_unrouted`` adds an app-wide check (``_app_wide``).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import multiprocessing
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar, cast

from quart import Blueprint, Quart, current_app

from quart_api.guards._app_wide import install_blocklist, install_unrouted_protection
from quart_api.guards._breaker import Breaker
from quart_api.guards._cache import invalidate_namespace
from quart_api.guards._decorators import Marks, RateSpec, marks_of
from quart_api.guards._identity import address_key, parse_address
from quart_api.guards._pipeline import guard_view, is_guarded
from quart_api.guards._plan import make_plan
from quart_api.guards._responses import Breach
from quart_api.guards._state import GuardsState, state_of
from quart_api.guards.config import DEFAULTS, GuardsSettings, read_settings
from quart_api.guards.errors import ConfigurationError, redact
from quart_api.guards.rates import parse_rates
from quart_api.guards.stores.base import CacheStore, CounterStore, StoreError
from quart_api.guards.stores.registry import cache_store_from_servers, counter_store_from_url

__all__ = ["UNSET", "Guards", "default_key_prefix"]

log = logging.getLogger("quart_api.guards")

UserLoader = Callable[[], Awaitable[str | None] | str | None]
L = TypeVar("L", bound=UserLoader)
BreachHook = Callable[[Breach], Any]
Rates = str | Iterable[str]


class _Unset:
    """Tells "not given" apart from ``None`` (which can be a real value)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final[Any] = _Unset()


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
        default_limits: rates (``"300/minute"``, several comma-separated) applied per
            IP and per user to every route without its own ``@rate_limited`` (nor a
            blueprint limit), except ``@exempt`` ones and static files.
        safelist: networks (``"10.0.0.0/8, 2001:db8::/32"`` or a list) whose clients
            skip every limit and ban (not the pre-checks or the cache).
        blocklist: networks whose clients get 403 on every route, before any view.
        on_breach: called with a :class:`~quart_api.guards.Breach` (sync or async) on
            every 429 the guards answer; what it raises is logged once, never sent.
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
        default_limits: Rates | None = UNSET,
        safelist: str | Iterable[str] | None = UNSET,
        blocklist: str | Iterable[str] | None = UNSET,
        on_breach: BreachHook | None = None,
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
            "GUARDS_DEFAULT_LIMITS": _rates_text(default_limits),
            "GUARDS_SAFELIST": safelist,
            "GUARDS_BLOCKLIST": blocklist,
        }
        if on_breach is not None and not callable(on_breach):
            raise TypeError(f"Guards(on_breach=...) takes a callable, not {on_breach!r}.")
        self._on_breach = on_breach
        self._counter_store = counter_store
        self._cache_store = cache_store
        self._clock = clock
        self._user_loader: UserLoader | None = None
        #: blueprint -> its rates, by ``limit_blueprint``
        self._blueprint_limits: dict[Blueprint, tuple[tuple[int, int], ...]] = {}
        #: the apps whose views were wrapped: a blueprint of theirs takes no new limit
        self._installed: weakref.WeakSet[Quart] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    # -- set-up -------------------------------------------------------------

    def init_app(self, app: Quart) -> Guards:
        """Resolve settings, create (unconnected) stores, hook the app's lifecycle."""
        config = {key: self._setting(app, key) for key in DEFAULTS}
        config["GUARDS_DEFAULT_LIMITS"] = _rates_text(config["GUARDS_DEFAULT_LIMITS"])
        settings = read_settings(config)
        # `is None`, never `or`: an empty store is falsy (it has a length).
        counters = self._counter_store
        if counters is None:
            counters = counter_store_from_url(settings.redis_url, timeout=settings.store_timeout)
        cache = self._cache_store
        if cache is None:
            cache = cache_store_from_servers(
                settings.memcached_servers, timeout=settings.store_timeout
            )
        state = GuardsState(
            settings=settings,
            guards=self,
            load_user=self.load_user,
            counters=counters,
            cache=cache,
            counter_breaker=Breaker(counters.kind, cooldown=settings.breaker_cooldown),
            cache_breaker=Breaker(cache.kind, cooldown=settings.breaker_cooldown),
            key_prefix=settings.key_prefix or default_key_prefix(app),
            clock=self._clock,
            enabled=settings.enabled,
            on_breach=self._on_breach,
        )
        app.extensions["guards"] = state
        app.before_serving(self._make_before_serving(app))
        app.after_serving(self._make_after_serving(app))
        app.before_request(self._make_first_request_hook(app))
        install_blocklist(app, state)
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
        if result is None or type(result) is str:
            return result
        if inspect.isawaitable(result):
            result = await result
        return None if result is None else str(result)

    def limit_blueprint(self, blueprint: Blueprint, rates: Rates) -> Blueprint:
        """Limit every route of ``blueprint`` to ``rates`` per IP and per user.

        Each route keeps its own budget (one per route rule, like a route's own
        ``@rate_limited``); a route with its own ``@rate_limited``, or ``@exempt``,
        keeps to that instead. The blueprint's limits take the place of the default
        limits for its routes. Call it before the app starts serving: afterwards it
        raises ``RuntimeError`` rather than be silently ignored.

        Args:
            blueprint: the blueprint (registered on the app under any name).
            rates: ``"10/minute"``, several comma-separated, or a list of them.
        """
        if not isinstance(blueprint, Blueprint):
            raise TypeError(f"limit_blueprint takes a Blueprint, not {blueprint!r}.")
        serving = [app.name for app in self._installed if blueprint in app.blueprints.values()]
        if serving:
            raise RuntimeError(
                f"limit_blueprint({blueprint.name!r}) is called after {serving[0]!r} started "
                "serving: its routes are wrapped already and would never count this limit. "
                "Call it before the app starts serving."
            )
        text = _rates_text(rates)
        self._blueprint_limits[blueprint] = tuple(
            parse_rates(text or "", f"limit_blueprint({blueprint.name!r}): rates")
        )
        return blueprint

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
        """Wrap every view of ``app`` that a guard covers (idempotent; runs at start-up)."""
        state = state_of(app)
        for endpoint, view in list(app.view_functions.items()):
            if is_guarded(view):
                continue
            marks = marks_of(view)
            implied = self._implied_rates(app, state.settings, endpoint, view, marks)
            if marks is None and not implied:
                continue  # nothing covers it: it runs as if the guards were not there
            plan = make_plan(endpoint, marks or Marks(), state, app.config, implied)
            app.view_functions[endpoint] = guard_view(app, state, plan, view)
        state.installed = True
        self._installed.add(app)

    def _implied_rates(
        self,
        app: Quart,
        settings: GuardsSettings,
        endpoint: str,
        view: Callable[..., Any],
        marks: Marks | None,
    ) -> tuple[RateSpec, ...]:
        """The limits ``endpoint`` gets without a ``@rate_limited`` of its own: its
        blueprint's (the innermost limited one), else the default limits (not on the
        static files an app or blueprint serves)."""
        if marks is not None and (marks.rates or marks.exempt):
            return ()
        rates: Sequence[tuple[int, int]] = ()
        parts = endpoint.split(".")[:-1]
        for end in range(len(parts), 0, -1):
            blueprint = app.blueprints.get(".".join(parts[:end]))
            if blueprint is not None and blueprint in self._blueprint_limits:
                rates = self._blueprint_limits[blueprint]
                break
        else:
            if not _serves_static_files(view):
                rates = settings.default_limits
        return tuple(RateSpec(limit, seconds * 1000) for limit, seconds in rates)

    # -- operations for apps, CLIs and tests --------------------------------

    async def reset(self, app: Quart | None = None) -> None:
        """Forget every counter, ban and cache entry of this app's guards."""
        state = state_of(_app(app))
        await state.counters.delete_matching(f"{state.key_prefix}:*")
        await state.cache.clear()
        state.generations.clear()
        state.refused.clear()

    async def unban(self, address: str, app: Quart | None = None) -> int:
        """Clear bans, failure and rate counters of one client address; returns keys removed.

        ``address`` is any spelling of an IP address (a port, brackets, IPv4-mapped
        IPv6); an IPv6 address clears its whole network (``GUARDS_IPV6_PREFIX``), as
        the limits count it. Anything else raises ``ValueError``: a glob pattern
        never reaches the store. Failures counted against an account (``@protected``
        with ``key=``) stay: they belong to the account, not to the address.
        """
        state = state_of(_app(app))
        ip = parse_address(address)
        if ip is None:
            raise ValueError(f"{address!r} is not an IP address")
        # Typed keys contain no glob characters, and user and custom keys are escaped,
        # so the pattern matches this address's keys and nothing else.
        key = address_key(ip, state.settings.ipv6_prefix)
        state.refused.forget(key)  # this worker's early cache lookups come back for it
        return await state.counters.delete_matching(f"{state.key_prefix}:*{{{key}}}*")

    async def invalidate(self, namespace: str, app: Quart | None = None) -> None:
        """Drop every cached response of ``namespace`` (one ``incr``, O(1))."""
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


def _serves_static_files(view: Callable[..., Any]) -> bool:
    """Whether ``view`` is the static-file view of an app or a blueprint.

    Known by the view itself, never by its endpoint's name: any view may be called
    ``static`` (an app without a static folder may even take the ``static``
    endpoint), and such a view must not slip out of the default limits.
    """
    owner = getattr(view, "__self__", None)
    return isinstance(owner, (Quart, Blueprint)) and getattr(view, "__func__", None) is getattr(
        type(owner), "send_static_file", None
    )


def _sibling_workers() -> int:
    """How many processes our parent started like us (hypercorn workers); 1 if unknown.

    A server that runs one worker is fine with memory stores; only several
    workers split the counters. Linux's /proc tells; elsewhere we cannot know.
    Only children running our command line count (numbers aside: spawned workers
    differ in their pipe handles): multiprocessing also starts a resource tracker
    beside the workers, which is not a worker.
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


def _app(app: Quart | None) -> Quart:
    if app is not None:
        return app
    return cast(Quart, current_app._get_current_object())  # type: ignore[attr-defined]


def _rates_text(value: Any) -> Any:
    """Rates given as a list of strings, as one comma-separated string; else as given."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(rate, str) for rate in value):
            raise ConfigurationError(f"{value!r} is not a list of rate strings ('300/minute')")
        return ", ".join(value)
    return value


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
