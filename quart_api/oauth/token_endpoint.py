"""``POST /oauth/token`` (RFC 6749 4.1.3, 6) and ``POST /oauth/revoke`` (RFC 7009).

Form-encoded requests; answers are JSON with ``Cache-Control: no-store``, errors
as RFC 6749 5.2 spells them. Only the authorization code (with PKCE) and refresh
token grants exist: the implicit and password grants are not offered (RFC 9700
2.1.2, 2.4). Both endpoints are rate limited per client IP and ``@protected``:
wrong client secrets, codes and refresh tokens (400, 401) count as failures, and
past ``PROTECT_LIMIT`` of them the IP is locked out (429).

Neither endpoint resolves a bearer principal (``user=False`` on the limits): the
``Authorization`` header here carries a client's Basic credentials.
"""

from __future__ import annotations

import uuid

from quart import Blueprint, Response, request
from quart_schema import hide
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.datastructures import MultiDict

from quart_api.db import get_database, get_session
from quart_api.guards import protected, rate_limited
from quart_api.models import ApiToken, OAuthGrant, OAuthRefreshToken, hash_secret
from quart_api.oauth.client_auth import authenticate_client
from quart_api.oauth.errors import NO_STORE, OAuthError, json_response
from quart_api.oauth.grants import redeem_code, refresh, revoke_access_token, revoke_grant
from quart_api.oauth.params import repeated_parameter, single
from quart_api.oauth.scopes import ScopeError, parse_scope

__all__ = ["blueprint"]

blueprint = Blueprint("oauth_token", __name__)

_FAILURES = {400, 401}


async def _form() -> MultiDict[str, str]:
    if request.mimetype != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request", "Send the parameters as application/x-www-form-urlencoded."
        )
    form = await request.form
    repeated = repeated_parameter(form)
    if repeated is not None:
        raise OAuthError("invalid_request", f"{repeated} is repeated (RFC 6749 3.2).")
    return form


def _required(form: MultiDict[str, str], name: str) -> str:
    value = single(form, name)
    if value is None:
        raise OAuthError("invalid_request", f"The parameter {name} is required.")
    return value


@blueprint.post("/oauth/token")
@hide  # form-encoded, RFC 6749 errors: described in the README and metadata
@rate_limited(config="API_RATE_LIMIT", user=False)
@protected(config="PROTECT_LIMIT", statuses=_FAILURES, block_status=429)
async def token() -> Response:
    """Exchange a code (with its PKCE verifier) or a refresh token for a token set."""
    try:
        form = await _form()
        session = get_session()
        async with get_database().deadline():
            client = await authenticate_client(session, form)
            grant_type = _required(form, "grant_type")
            if grant_type == "authorization_code":
                code = _required(form, "code")
                verifier = _required(form, "code_verifier")
                body = await redeem_code(
                    session, client, code, verifier, single(form, "redirect_uri")
                )
            elif grant_type == "refresh_token":
                refresh_token = _required(form, "refresh_token")
                scope = single(form, "scope")
                try:
                    requested = parse_scope(scope) if scope is not None else None
                except ScopeError as error:
                    raise OAuthError("invalid_scope", str(error).capitalize() + ".") from None
                body = await refresh(session, client, refresh_token, requested)
            else:
                raise OAuthError(
                    "unsupported_grant_type",
                    "Only the authorization_code (with PKCE) and refresh_token grants exist here.",
                )
    except OAuthError as error:
        return error.response()
    return json_response(body)


@blueprint.post("/oauth/revoke")
@hide  # form-encoded, RFC 6749 errors: described in the README and metadata
@rate_limited(config="API_RATE_LIMIT", user=False)
@protected(config="PROTECT_LIMIT", statuses={401}, block_status=429)
async def revoke() -> Response:
    """Revoke an access token, or a refresh token and its whole grant (RFC 7009 2.1).

    200 whether or not the token was known (2.2): the answer tells nothing about
    tokens. A token issued to another client is left alone.
    """
    try:
        form = await _form()
        session = get_session()
        async with get_database().deadline():
            client = await authenticate_client(session, form)
            secret = _required(form, "token")
            hint = single(form, "token_type_hint")  # a hint only: both kinds are searched
            await _revoke_token(
                session, client.id, hash_secret(secret), refresh_first=hint == "refresh_token"
            )
    except OAuthError as error:
        return error.response()
    return Response("", status=200, headers=NO_STORE)


async def _revoke_token(
    session: AsyncSession, client_id: uuid.UUID, digest: str, refresh_first: bool
) -> None:
    """Revoke the access or refresh token whose hash is ``digest``, if it is ``client_id``'s."""
    kinds = (
        (_revoke_refresh, _revoke_access) if refresh_first else (_revoke_access, _revoke_refresh)
    )
    for kind in kinds:
        if await kind(session, client_id, digest):
            return


async def _revoke_access(session: AsyncSession, client_id: uuid.UUID, digest: str) -> bool:
    """True when ``digest`` is an OAuth access token (revoked if ``client_id``'s)."""
    row = (
        await session.execute(
            select(ApiToken, OAuthGrant.client_id)
            .join(OAuthGrant, ApiToken.grant_id == OAuthGrant.id)
            .where(ApiToken.token_hash == digest)
        )
    ).one_or_none()
    if row is None:
        return False
    token, owner = row
    if owner == client_id:
        await revoke_access_token(session, token)
    return True


async def _revoke_refresh(session: AsyncSession, client_id: uuid.UUID, digest: str) -> bool:
    """True when ``digest`` is a refresh token (its grant revoked if ``client_id``'s)."""
    row = (
        await session.execute(
            select(OAuthGrant)
            .join(OAuthRefreshToken, OAuthRefreshToken.grant_id == OAuthGrant.id)
            .where(OAuthRefreshToken.token_hash == digest)
        )
    ).scalar_one_or_none()
    if row is None:
        return False
    if row.client_id == client_id:
        await revoke_grant(session, row)
    return True
