"""``/api/v1/auth/tokens``: personal API tokens (bearer), shown once, revocable.

A token never grants more than its creator holds: the scopes asked for must be
a subset of the caller's own (a cookie session holds every scope), and a token
made with a token never expires later than it (``expires_at`` is clamped). A user
holds at most ``MAX_LIVE_TOKENS`` live (unrevoked, unexpired) personal tokens; past
it, creating one is 409. The access tokens of the apps the user authorized (OAuth)
do not count: an app refreshing its tokens must not use up the user's own. The
response that shows a secret is ``Cache-Control: no-store``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from quart import Blueprint
from sqlalchemy import func, or_, select
from werkzeug.exceptions import Forbidden, NotFound

from quart_api.api.common import (
    api_view,
    enforce_holding_limit,
    expires_in,
    json_body,
    parse_uuid,
)
from quart_api.api.openapi import documented
from quart_api.api.schemas import (
    NoContent,
    TokenCreatedEnvelope,
    TokenCreateRequest,
    TokenListEnvelope,
)
from quart_api.auth import (
    KNOWN_SCOPES,
    NO_STORE,
    forget_principals,
    require_principal,
    requires_scopes,
)
from quart_api.db import get_session
from quart_api.guards import rate_limited
from quart_api.models import ApiToken, ValidationError, utcnow

__all__ = ["blueprint"]

blueprint = Blueprint("tokens", __name__, url_prefix="/api/v1/auth/tokens")

#: Live (unrevoked, unexpired) tokens one user may hold.
MAX_LIVE_TOKENS = 100
_TOKEN_FIELDS = frozenset({"name", "scopes", "expires_in"})


def _token_body(token: ApiToken, secret: str | None = None) -> dict[str, Any]:
    body = token.to_dict()
    if secret is not None:
        body["token"] = secret
    return body


def _validate(data: dict[str, Any]) -> tuple[dict[str, Any], timedelta | None]:
    errors: list[dict[str, str]] = [
        {"field": name, "message": "unknown field"} for name in data if name not in _TOKEN_FIELDS
    ]
    if "scopes" not in data:
        errors.append({"field": "scopes", "message": "field is required"})
    lifetime = expires_in(data, errors)
    scopes = data.get("scopes")
    if isinstance(scopes, list) and all(isinstance(s, str) for s in scopes):
        unknown = sorted(set(scopes) - set(KNOWN_SCOPES))
        if unknown:
            message = f"unknown scopes {unknown}; known: {list(KNOWN_SCOPES)}"
            errors.append({"field": "scopes", "message": message})
    fields = {k: v for k, v in data.items() if k in ("name", "scopes")}
    try:
        ApiToken.validate(fields, create=True)
    except ValidationError as error:
        errors.extend(error.errors)
    if errors:
        raise ValidationError(errors)
    return fields, lifetime


@blueprint.post("")
@documented(
    request=TokenCreateRequest,
    responses={201: TokenCreatedEnvelope},
    errors=(400, 401, 403, 409, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def create_token() -> tuple[dict[str, Any], int, dict[str, str]]:
    """``{name, scopes, expires_in?}`` -> 201 with the secret, shown this once.

    A token made with a token expires no later than it; 409 past ``MAX_LIVE_TOKENS``.
    """
    principal = await require_principal()
    fields, lifetime = _validate(await json_body())
    scopes = sorted(set(fields["scopes"]))
    beyond = sorted(set(scopes) - principal.scopes)
    if beyond:
        raise Forbidden(f"A token cannot carry scopes its creator lacks: {' '.join(beyond)}.")
    now = utcnow()
    await enforce_holding_limit(
        principal.user_id,
        select(func.count())
        .select_from(ApiToken)
        .where(
            ApiToken.user_id == principal.user_id,
            ApiToken.grant_id.is_(None),  # apps' access tokens are not the user's to hold
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        ),
        MAX_LIVE_TOKENS,
        "API tokens",
    )
    token, secret = ApiToken.issue(
        principal.user_id, fields["name"], scopes, lifetime, not_after=principal.expires_at
    )
    session = get_session()
    session.add(token)
    await session.commit()
    return {"data": _token_body(token, secret)}, 201, {"Cache-Control": NO_STORE}


@blueprint.get("")
@documented(responses={200: TokenListEnvelope}, errors=(401, 403))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def list_tokens() -> dict[str, Any]:
    """The caller's tokens that are not revoked (secrets are never shown again)."""
    principal = await require_principal()
    tokens = (
        await get_session().execute(
            select(ApiToken)
            .where(ApiToken.user_id == principal.user_id, ApiToken.revoked_at.is_(None))
            .where(ApiToken.grant_id.is_(None))  # apps' tokens: /api/v1/oauth/grants
            .order_by(ApiToken.created_at, ApiToken.id)
        )
    ).scalars()
    return {"data": [_token_body(t) for t in tokens]}


@blueprint.delete("/<token_id>")
@documented(responses={204: NoContent}, errors=(401, 403, 404))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def revoke_token(token_id: str) -> tuple[str, int]:
    """Revoke one of the caller's tokens; it stops working at once.

    Unknown (or already revoked) is 404; another user's token is 403, as for
    every other resource of another user.
    """
    principal = await require_principal()
    session = get_session()
    token = await session.get(ApiToken, parse_uuid(token_id))
    if token is None or token.revoked_at is not None:
        raise NotFound("No such token.")
    if token.user_id != principal.user_id:
        raise Forbidden("Only the token's owner may revoke it.")
    token.revoked_at = utcnow()
    await session.commit()
    forget_principals(principal.user_id)  # this process stops accepting it at once
    return "", 204
