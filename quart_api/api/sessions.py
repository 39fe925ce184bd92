"""``/api/v1/auth/login`` and ``/logout``: cookie sessions.

Login is rate limited per IP (``LOGIN_RATE_LIMIT``) and ``@protected`` against
401s (``PROTECT_LIMIT``): a password guesser is banned after that many
failures. Unknown usernames are verified against a dummy hash, so the answer
takes as long as for a real account and timing does not reveal which exist.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from werkzeug.exceptions import Unauthorized

from quart_api.api.common import api_view, json_body, require_fields
from quart_api.api.openapi import documented
from quart_api.api.schemas import LoginRequest, NoContent, UserEnvelope
from quart_api.api.users import user_body
from quart_api.auth import current_principal, forget_principals, log_in, log_out
from quart_api.db import get_session
from quart_api.guards import protected, rate_limited
from quart_api.models import User
from quart_api.passwords import ahash_password, averify_password, dummy_hash, needs_rehash

__all__ = ["blueprint"]

blueprint = Blueprint("sessions", __name__, url_prefix="/api/v1/auth")


@blueprint.post("/login")
@documented(request=LoginRequest, responses={200: UserEnvelope}, errors=(400, 401, 415, 422))
@rate_limited(config="LOGIN_RATE_LIMIT", user=False, scope="login")
@protected(
    config="PROTECT_LIMIT", statuses={401}, block_status=429, reset_on_success=True, scope="login"
)
@api_view
async def login() -> dict[str, Any]:
    """``{username, password}`` -> 200 ``{"data": user}`` and a session cookie."""
    data = await json_body()
    require_fields(data, {"username": (str, 64), "password": (str, 1024)})
    session = get_session()
    user = await User.by_username(session, data["username"])
    stored = user.password_hash if user is not None and user.password_hash else dummy_hash()
    valid = await averify_password(stored, data["password"])
    if user is None or user.password_hash is None or not valid:
        raise Unauthorized("Wrong username or password.")
    if needs_rehash(user.password_hash):
        user.password_hash = await ahash_password(data["password"])  # same password: no logout
        await session.commit()
    log_in(user)
    principal = await current_principal()
    return {"data": user_body(user, principal)}


@blueprint.post("/logout")
@documented(responses={204: NoContent})
@rate_limited(config="API_RATE_LIMIT")
@api_view
async def logout() -> tuple[str, int]:
    """End the session: the cookie is deleted and its version retired server-side."""
    principal = await current_principal()
    if principal is not None and principal.via == "cookie":
        user = await principal.load_user()
        user.end_sessions()
        await get_session().commit()
        forget_principals(user.id)
    log_out()
    return "", 204
