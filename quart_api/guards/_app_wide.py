"""The checks that run on every request of an app, not only on guarded routes.

They are installed only when configured, so an app that sets neither keeps its
unguarded routes free of any cost:

- ``GUARDS_BLOCKLIST``: a client whose address (as the guards see it, after
  ``TRUSTED_PROXY_COUNT``), or the IPv4 host that address is built from (6to4,
  Teredo, NAT64), lies in a listed network gets 403 problem+json, before any view,
  on every route, unknown paths and websockets included. No store is asked.
- ``protect_unrouted=(failures, seconds)``: every request that matches no route
  counts as a failure for its client IP; past ``failures`` the client is banned from
  the unknown paths and from every guarded route (the ban check rides along in the
  guarded routes' single store call, so it costs nothing extra there). Unguarded
  routes are not checked: that would tax every request. Safelisted clients are
  never counted.
"""

from __future__ import annotations

from quart import Quart, request, websocket
from werkzeug.exceptions import NotFound

from quart_api.guards._protect import Ban
from quart_api.guards._responses import Blocklisted
from quart_api.guards._state import (
    GuardsState,
    RequestFacts,
    address_of,
    in_blocklist,
    in_networks,
    store_op,
)
from quart_api.guards.stores.base import Failure

__all__ = ["install_blocklist", "install_unrouted_protection"]


def install_blocklist(app: Quart, state: GuardsState) -> None:
    """Refuse blocklisted clients on every request and websocket (``before_*`` hooks)."""
    blocklist = state.settings.blocklist
    if not blocklist:
        return

    def refuse_blocklisted_request() -> None:
        if state.enabled and in_blocklist(address_of(state, request), blocklist):
            raise Blocklisted()

    def refuse_blocklisted_websocket() -> None:
        if state.enabled and in_blocklist(address_of(state, websocket), blocklist):
            raise Blocklisted()

    # First in line: a refused client reaches none of the app's own hooks either.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_blocklisted_request)
    app.before_websocket_funcs.setdefault(None, []).insert(0, refuse_blocklisted_websocket)


def install_unrouted_protection(app: Quart, state: GuardsState) -> None:
    """Count every unrouted request as a failure of its client IP (a ``before_request`` hook)."""
    if state.settings.protect_unrouted is None:
        return
    failures, seconds = state.settings.protect_unrouted
    # The same keys the guarded routes check this ban under.
    keys = Ban("unrouted", state.key_prefix)
    safelist = state.settings.safelist

    async def count_unrouted() -> None:
        if not state.enabled or not isinstance(request.routing_exception, NotFound):
            return
        ctx = RequestFacts(state, request._get_current_object())  # type: ignore[attr-defined]
        ip = ctx.client_key()
        if safelist and in_networks(ctx.client_address(), safelist):
            return
        # One call: an unknown path answers 404 whether or not its prober is banned,
        # so only the failure is recorded here; the ban bites on the guarded routes.
        failure = Failure(
            f"{keys.fail_key}{ip}}}",
            f"{keys.ban_key}{ip}}}",
            limit=failures,
            window_ms=seconds * 1000,
        )
        await store_op(state.counter_breaker, state.counters.record_failure(failure))

    app.before_request(count_unrouted)
