"""One app's guards state, one request's facts, and the one place the guards fail open.

:class:`GuardsState` lives in ``app.extensions["guards"]`` (never on the ``Guards``
instance, so one instance can serve several apps): the resolved settings, the stores
and their breakers, the cache's in-process bookkeeping.

:class:`RequestFacts` are what the limits before the view and the cache after them
share per request: the client's key and the user, each computed at most once (the user
loader may hit a database), and the stores that failed during the request.

:func:`store_op` is the only place where a store call fails open: a store that failed
once is skipped for the rest of the request, whichever stage called it.
:func:`client_address` is the guards' identity for code outside them (an allow-list
of addresses, a log line).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from quart import Quart, Request, Websocket, current_app, has_request_context, request, websocket
from werkzeug.exceptions import HTTPException

from quart_api.guards._breaker import Breaker
from quart_api.guards._cache_entries import DecodedEntries
from quart_api.guards._identity import (
    IPAddress,
    address_key,
    embedded_ipv4,
    identify,
    pick_hop,
    typed_key,
)
from quart_api.guards._refused import RefusedClients
from quart_api.guards._responses import Breach
from quart_api.guards.config import GuardsSettings, Network
from quart_api.guards.stores.base import CacheStore, CounterStore, StoreError

__all__ = [
    "GuardsState",
    "RequestFacts",
    "address_of",
    "client_address",
    "in_blocklist",
    "in_networks",
    "invoke",
    "state_of",
    "store_op",
    "user_key",
]

log = logging.getLogger("quart_api.guards")

_T = TypeVar("_T")
UserLoad = Callable[[], Awaitable[str | None]]
BreachHook = Callable[[Breach], Any]


@dataclass(slots=True)
class GuardsState:
    """Everything one app's guards need at request time."""

    settings: GuardsSettings
    #: the ``Guards`` instance that installed this state (for code holding only the app)
    guards: Any
    load_user: UserLoad
    counters: CounterStore
    cache: CacheStore
    counter_breaker: Breaker
    cache_breaker: Breaker
    key_prefix: str
    clock: Callable[[], float]
    #: ``settings.enabled``, read on every guarded request
    enabled: bool = True
    on_breach: BreachHook | None = None
    #: blueprint name -> the rates ``Guards.limit_blueprint`` gave its routes
    blueprint_limits: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    generations: dict[str, tuple[int, float]] = field(default_factory=dict)
    generation_ttl: float = 1.0
    installed: bool = False
    #: per-process single flight: cache key -> future of the refreshed entry bytes.
    inflight: dict[bytes, Any] = field(default_factory=dict)
    #: entries decoded lately, by key (a hit of an unchanged entry skips decoding)
    decoded: DecodedEntries = field(default_factory=DecodedEntries)
    #: per-process attempts in flight of plain ``@protected``, by failure key
    attempts_in_flight: dict[str, int] = field(default_factory=dict)
    #: clients refused lately: their cache lookups wait for their checks (``_refused``)
    refused: RefusedClients = field(default_factory=RefusedClients)
    warned: set[str] = field(default_factory=set)

    def warn_once(self, topic: str, message: str, *args: object, **kwargs: Any) -> None:
        """Log ``message`` the first time ``topic`` comes up (``kwargs``: as ``log.warning``)."""
        if topic not in self.warned:
            self.warned.add(topic)
            log.warning(message, *args, **kwargs)


def state_of(app: Quart) -> GuardsState:
    """The guards state of ``app``; ``RuntimeError`` when Guards is not installed on it."""
    state = app.extensions.get("guards")
    if not isinstance(state, GuardsState):
        raise RuntimeError("Guards is not installed on this app: call Guards(app) first.")
    return state


#: what a sync callable of the user's returns most often: none of it is awaitable
_PLAIN = (str, bool, int)


async def invoke(fn: Callable[[], Any]) -> Any:
    """Call a user's no-argument callable, sync or async."""
    result = fn()
    if result is None or isinstance(result, _PLAIN):
        return result
    if inspect.isawaitable(result):
        result = await result
    return result


class CacheLookup(NamedTuple):
    """A cache lookup started before the request's limit check answered."""

    generation: int
    key: bytes
    reply: asyncio.Future[bytes | None]


class RequestFacts:
    """Per-request facts computed at most once (the user loader may hit a database).

    ``conn`` is the request (or websocket) object itself, not Quart's context-local
    proxy, which would look the context up again on every attribute read.
    """

    __slots__ = (
        "address",
        "conn",
        "failed",
        "ip_key",
        "lookup",
        "state",
        "user",
        "user_error",
        "user_loaded",
    )

    def __init__(self, state: GuardsState, conn: Request | Websocket) -> None:
        self.state = state
        self.conn = conn
        self.address: IPAddress | None = None
        self.ip_key: str | None = None
        #: the user id from the loader (as the loader gave it; see ``user_key``)
        self.user: str | None = None
        self.user_loaded = False
        #: the loader's refusal (a bad token), raised only after the IP limit was checked
        self.user_error: HTTPException | None = None
        #: breakers of the stores that failed during this request (skipped from then on)
        self.failed: list[Breaker] = []
        #: the cache lookup started with the limit check, until the cache takes it
        self.lookup: CacheLookup | None = None

    def client_key(self) -> str:
        """The client's typed key (``i:1.2.3.4``, ``i:2001:db8::/64``)."""
        if self.ip_key is None:
            self.address, self.ip_key = identity_of(self.state, self.conn)
        return self.ip_key

    def client_address(self) -> IPAddress | None:
        """The client's address (None when it is not an IP address)."""
        self.client_key()
        return self.address

    async def user_id(self) -> str | None:
        """The user's id; raises what the loader raised (401 for a bad token)."""
        user = await self.user_id_for_limits()
        if self.user_error is not None:
            raise self.user_error
        return user

    async def user_id_for_limits(self) -> str | None:
        """The user's id, with a refusing loader counted as anonymous: the request is
        then charged to its IP, and the refusal raised once the limits were checked."""
        if not self.user_loaded:
            self.user_loaded = True
            try:
                self.user = await self.state.load_user()
            except HTTPException as error:
                self.user_error = error
        return self.user


def address_of(state: GuardsState, conn: Request | Websocket) -> IPAddress | None:
    """The client address of ``conn`` under ``state``'s proxy settings (None: not an IP)."""
    return identity_of(state, conn)[0]


_UNKNOWN = (None, address_key(None, 0))


def identity_of(state: GuardsState, conn: Request | Websocket) -> tuple[IPAddress | None, str]:
    """The client address of ``conn`` under ``state``'s proxy settings and its typed key.

    A chosen hop that is not an address never names the client: the socket peer
    does, and one warning says the proxy set-up looks wrong.
    """
    peer = conn.remote_addr
    settings = state.settings
    proxies = settings.trusted_proxy_count
    # getlist: every line, in order (RFC 9110 5.3); it also costs no raised KeyError.
    hop = pick_hop(conn.headers.getlist("X-Forwarded-For"), proxies) if proxies else None
    if hop is not None:
        found = identify(hop, settings.ipv6_prefix)
        if found[0] is not None:
            return found
        state.warn_once(
            "forwarded-for",
            "X-Forwarded-For hop %r (TRUSTED_PROXY_COUNT=%d from the right) is not an IP "
            "address: counting the socket peer instead. Check the proxy set-up: each "
            "trusted proxy must append the address it saw.",
            hop[:100],
            proxies,
        )
    return identify(peer, settings.ipv6_prefix) if peer else _UNKNOWN


def in_networks(address: IPAddress | None, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` lies in one of ``networks`` (None, not an address: never)."""
    if address is None:
        return False
    version = address.version
    return any(network.version == version and address in network for network in networks)


def in_blocklist(address: IPAddress | None, blocklist: tuple[Network, ...]) -> bool:
    """Whether ``address``, or the IPv4 host it is built from (6to4, Teredo, NAT64),
    lies in one of ``blocklist``'s networks: a listed IPv4 host gets no way round
    the list through a tunnel or translator address of its own."""
    if address is None:
        return False
    if in_networks(address, blocklist):
        return True
    host = embedded_ipv4(address)
    return host is not None and in_networks(host, blocklist)


def client_address(
    conn: Request | Websocket | None = None, app: Quart | None = None
) -> IPAddress | None:
    """The client's IP address as the guards see it (None when it is not an IP).

    The one identity of the guards, for code outside them: an allow-list, a log
    line. ``X-Forwarded-For`` is believed through ``TRUSTED_PROXY_COUNT`` proxies
    only, ports are stripped and IPv4-mapped IPv6 unwrapped (no /64 grouping: this
    is the address itself).

    Args:
        conn: the request or websocket (default: the current one).
        app: the app whose guards settings apply (default: the current app).
    """
    if conn is None:
        proxy = request if has_request_context() else websocket
        conn = proxy._get_current_object()  # type: ignore[union-attr]
    state = state_of(app if app is not None else current_app._get_current_object())  # type: ignore[attr-defined]
    return address_of(state, conn)


def user_key(user: str) -> str:
    """The typed key of a user id (``u:<escaped id>``)."""
    return typed_key("u", user)


async def store_op(
    breaker: Breaker, call: Awaitable[_T], ctx: RequestFacts | None = None
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
        elif isinstance(call, asyncio.Future):
            call.cancel()  # also marks an error it already holds as retrieved (not logged)
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
