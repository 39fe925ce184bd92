"""The service keeps no Quart session: its only cookie is quart-auth's.

Quart's default ``SecureCookieSessionInterface`` builds a signing serializer and
looks for a session cookie on every request once ``SECRET_KEY`` is set, about a
tenth of a bare request's cost, for a session nothing here reads or writes. This
interface hands every request an empty read-only session instead, whose writes
fail with a message that says where the login state lives.
"""

from __future__ import annotations

from typing import Any, NoReturn

from flask.sessions import NullSession
from quart import Quart, Response
from quart.sessions import SessionInterface
from quart.wrappers import BaseRequestWebsocket
from werkzeug.wrappers import Response as WerkzeugResponse

__all__ = ["NoSession", "NoSessionInterface"]


class NoSession(NullSession):
    """Empty and read-only."""

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(
            "quart_api keeps no Quart session: log-in state is quart-auth's cookie "
            "(quart_api.auth.log_in / current_principal)."
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


class NoSessionInterface(SessionInterface):
    """Every request gets a :class:`NoSession`; nothing is ever saved."""

    null_session_class = NoSession

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> None:
        return None  # Quart then asks make_null_session for the request's session

    async def save_session(
        self, app: Quart, session: Any, response: Response | WerkzeugResponse | None
    ) -> None:
        return None
