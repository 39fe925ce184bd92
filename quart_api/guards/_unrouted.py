"""Optional app-wide protection against scanners probing unknown paths.

With ``protect_unrouted=(failures, seconds)``, every request that matches no
route counts as a failure for its client IP; past ``failures`` the client is
banned from the unknown paths and from every guarded route (the ban check
rides along in the guarded routes' single store call, so it costs nothing
extra there). Unguarded routes are not checked: that would tax every request.
"""

from __future__ import annotations

from quart import Quart, request
from werkzeug.exceptions import NotFound

from quart_api.guards._context import RequestFacts, store_op
from quart_api.guards._extension import GuardsState
from quart_api.guards._protected_view import Ban
from quart_api.guards.stores.base import Failure

__all__ = ["install_unrouted_protection"]


def install_unrouted_protection(app: Quart, state: GuardsState) -> None:
    """Count every unrouted request as a failure of its client IP (a ``before_request`` hook)."""
    if state.protect_unrouted is None:
        return
    failures, seconds = state.protect_unrouted
    # The same keys the guarded routes check this ban under.
    keys = Ban("unrouted", state.key_prefix)

    async def count_unrouted() -> None:
        if not state.enabled or not isinstance(request.routing_exception, NotFound):
            return
        ip = RequestFacts(state, request._get_current_object()).client_key()  # type: ignore[attr-defined]
        # One call: an unknown path answers 404 whether or not its prober is banned,
        # so only the failure is recorded here; the ban bites on the guarded routes.
        failure = Failure(
            f"{keys.fail_key}{ip}}}",
            f"{keys.ban_key}{ip}}}",
            limit=failures,
            window_ms=seconds * 1000,
        )
        await store_op(state, state.counter_breaker, state.counters.record_failure(failure))

    app.before_request(count_unrouted)
