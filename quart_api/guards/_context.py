"""What one request's checks share: its client facts and the store calls that fail open.

The limits before the view and the cache after them both need the client IP and the
user (computed at most once: the user loader may hit a database), and both call
stores through :func:`store_op`, the one place where the guards fail open. A store
that failed once is skipped for the rest of the request, whichever flow called it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from quart import Request, Websocket
from werkzeug.exceptions import HTTPException

from quart_api.guards._breaker import Breaker
from quart_api.guards._extension import GuardsState
from quart_api.guards._identity import client_address, normalize_address
from quart_api.guards.stores.base import StoreError

__all__ = ["RequestFacts", "invoke", "store_op"]

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

    __slots__ = ("conn", "failed", "ip", "state", "user", "user_error", "user_loaded")

    def __init__(self, state: GuardsState, conn: Request | Websocket) -> None:
        self.state = state
        self.conn = conn
        self.ip: str | None = None
        self.user: str | None = None
        self.user_loaded = False
        #: the loader's refusal (a bad token), raised only after the IP limit was checked
        self.user_error: HTTPException | None = None
        #: breakers of the stores that failed during this request (skipped from then on)
        self.failed: list[Breaker] = []

    def client_ip(self) -> str:
        if self.ip is None:
            conn = self.conn
            proxies = self.state.trusted_proxy_count
            # Read only when believed: a missing header costs werkzeug a raised KeyError.
            forwarded_for = conn.headers.get("X-Forwarded-For") if proxies else None
            address = client_address(conn.remote_addr, forwarded_for, proxies)
            self.ip = normalize_address(address, self.state.ipv6_prefix)
        return self.ip

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
