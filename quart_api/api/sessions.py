"""``/api/v1/auth/login`` and ``/logout``: cookie sessions.

Login is rate limited per IP (``LOGIN_RATE_LIMIT``) and ``@protected`` against
401s per client IP and per account (``PROTECT_LIMIT`` each): past either, 429
"too many failed logins" until the window ends. Counting per account stops a
guesser who rotates addresses; counting per IP stops one who spreads guesses over
accounts. A success clears only that account's failures from that client, so
logging in to one's own account does not launder guesses at another. Each attempt
is reserved before the password check, so concurrent guesses cannot overshoot.
Unknown usernames count like known ones and are verified against a dummy hash, so
neither the answer, its timing nor the lock-out reveals which accounts exist.
"""

from __future__ import annotations

from typing import Any

import orjson
from quart import Blueprint, request
from sqlalchemy import update
from werkzeug.exceptions import HTTPException, Unauthorized

from quart_api.api.common import (
    api_view,
    database_phase,
    json_body,
    phased_api_view,
    require_fields,
)
from quart_api.api.openapi import documented
from quart_api.api.schemas import LoginRequest, NoContent, UserEnvelope
from quart_api.api.users import user_body
from quart_api.auth import current_principal, forget_principals, log_in, log_out
from quart_api.db import get_session
from quart_api.guards import protected, rate_limited
from quart_api.models import User
from quart_api.models.user import normalize_username
from quart_api.passwords import ahash_password, averify_password, dummy_hash, needs_rehash

__all__ = ["blueprint"]

blueprint = Blueprint("sessions", __name__, url_prefix="/api/v1/auth")

#: Longest username a login may name (the view refuses longer ones with 422).
_MAX_USERNAME = 64


async def login_account() -> str | None:
    """The account a login names, normalized as lookups are; None when it names none.

    Runs before the view (the guards' failure key), so it never raises: a body the
    view will refuse (400, 415, 422) names no account and counts for its IP only.
    It parses whatever the content type, exactly as the view does, so any body the
    view accepts names its account here. Quart keeps the body: the view reads it
    again for free.
    """
    try:
        data = orjson.loads(await request.get_data(as_text=False))
    except (HTTPException, orjson.JSONDecodeError):
        return None
    username = data.get("username") if isinstance(data, dict) else None
    if not isinstance(username, str) or not username or len(username) > _MAX_USERNAME:
        return None
    return normalize_username(username)


@blueprint.post("/login")
@documented(request=LoginRequest, responses={200: UserEnvelope}, errors=(400, 401, 415, 422))
@rate_limited(config="LOGIN_RATE_LIMIT", user=False, scope="login")
@protected(
    config="PROTECT_LIMIT",
    statuses={401},
    block_status=429,
    reset_on_success=True,
    key=login_account,
    block_detail="Too many failed logins.",
    scope="login",
)
@phased_api_view
async def login() -> dict[str, Any]:
    """``{username, password}`` -> 200 ``{"data": user}`` and a session cookie.

    The password is verified with no transaction open (``phased_api_view``).
    """
    data = await json_body()
    require_fields(data, {"username": (str, _MAX_USERNAME), "password": (str, 1024)})
    async with database_phase(read_only=True, release=True):
        user = await User.by_username(get_session(), data["username"])
    stored = user.password_hash if user is not None and user.password_hash else dummy_hash()
    valid = await averify_password(stored, data["password"])
    if user is None or user.password_hash is None or not valid:
        raise Unauthorized("Wrong username or password.")
    if needs_rehash(stored):
        rehashed = await ahash_password(data["password"])  # same password: no logout
        async with database_phase():
            await get_session().execute(
                update(User)
                .where(User.id == user.id, User.password_hash == stored)
                .values(password_hash=rehashed)
            )
            await get_session().commit()
    log_in(user)
    principal = await current_principal()
    return {"data": user_body(user, principal)}


@blueprint.post("/logout")
@documented(responses={204: NoContent}, errors=(403,))
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
