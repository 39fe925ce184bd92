"""What one request's checks share: its client facts and the store calls that fail open.

The limits before the view and the cache after them both need the client's key and
the user (computed at most once: the user loader may hit a database), and both call
stores through :func:`store_op`, the one place where the guards fail open. A store
that failed once is skipped for the rest of the request, whichever flow called it.
:func:`client_address` is the same identity for code outside the guards (an
allow-list of addresses, a log line).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from quart import Quart, Request, Websocket, current_app, has_request_context, request, websocket
from werkzeug.exceptions import HTTPException

from quart_api.guards._breaker import Breaker
from quart_api.guards._extension import GuardsState, state_of
from quart_api.guards._identity import IPAddress, address_key, parse_address, pick_hop, typed_key
from quart_api.guards.stores.base import StoreError

__all__ = ["RequestFacts", "address_of", "client_address", "invoke", "store_op", "user_key"]

_T = TypeVar("_T")


async def invoke(fn: Callable[[], Any]) -> Any:
    """Call a user's no-argument callable, sync or async."""
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


class RequestFacts:
    """Per-request facts computed at most once (the user loader may hit a database).

    ``conn`` is the request (or websocket) object itself, not Quart's context-local
    proxy, which would look the context up again on every attribute read.
    """

    __slots__ = ("conn", "failed", "ip_key", "state", "user", "user_error", "user_loaded")

    def __init__(self, state: GuardsState, conn: Request | Websocket) -> None:
        self.state = state
        self.conn = conn
        self.ip_key: str | None = None
        #: the user id from the loader (as the loader gave it; see ``user_key``)
        self.user: str | None = None
        self.user_loaded = False
        #: the loader's refusal (a bad token), raised only after the IP limit was checked
        self.user_error: HTTPException | None = None
        #: breakers of the stores that failed during this request (skipped from then on)
        self.failed: list[Breaker] = []

    def client_key(self) -> str:
        """The client's typed key (``i:1.2.3.4``, ``i:2001:db8::/64``)."""
        if self.ip_key is None:
            self.ip_key = address_key(address_of(self.state, self.conn), self.state.ipv6_prefix)
        return self.ip_key

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
                self.user = await self.state.guards.load_user()
            except HTTPException as error:
                self.user_error = error
        return self.user


def address_of(state: GuardsState, conn: Request | Websocket) -> IPAddress | None:
    """The client address of ``conn`` under ``state``'s proxy settings (None: not an IP).

    A chosen hop that is not an address never names the client: the socket peer
    does, and one warning says the proxy set-up looks wrong.
    """
    peer = conn.remote_addr
    proxies = state.trusted_proxy_count
    # getlist: every line, in order (RFC 9110 5.3); it also costs no raised KeyError.
    hop = pick_hop(conn.headers.getlist("X-Forwarded-For"), proxies) if proxies else None
    if hop is not None:
        address = parse_address(hop)
        if address is not None:
            return address
        state.warn_once(
            "forwarded-for",
            "X-Forwarded-For hop %r (TRUSTED_PROXY_COUNT=%d from the right) is not an IP "
            "address: counting the socket peer instead. Check the proxy set-up: each "
            "trusted proxy must append the address it saw.",
            hop[:100],
            proxies,
        )
    return parse_address(peer) if peer else None


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
    state: GuardsState, breaker: Breaker, call: Awaitable[_T], ctx: RequestFacts | None = None
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
