"""``/api/v1/oauth/grants``: the apps a user authorized, and taking that back.

``GET`` lists the caller's live grants (redeemed, not revoked): which app, which
scopes, since when, last refreshed when. ``DELETE /<id>`` revokes one: its access
tokens stop working at once in this worker (and within ``AUTH_CACHE_SECONDS`` in
the others), its refresh tokens at once everywhere. Both need ``tokens:write``.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from sqlalchemy import func, select
from werkzeug.exceptions import Forbidden, NotFound

from quart_api.api.common import api_view, page_envelope, pagination, parse_uuid
from quart_api.api.openapi import documented
from quart_api.api.schemas import NoContent, PageQuery
from quart_api.auth import require_principal, requires_scopes
from quart_api.db import get_session
from quart_api.guards import rate_limited
from quart_api.models import OAuthClient, OAuthGrant
from quart_api.oauth.grants import revoke_grant
from quart_api.oauth.schemas import OAuthGrantPage
from quart_api.oauth.scopes import format_scope

__all__ = ["blueprint"]

blueprint = Blueprint("oauth_grants", __name__, url_prefix="/api/v1/oauth/grants")


def _grant_body(grant: OAuthGrant, client_name: str) -> dict[str, Any]:
    return {
        "id": str(grant.id),
        "client_id": str(grant.client_id),
        "client_name": client_name,
        "scope": format_scope(grant.scopes),
        "created_at": grant.created_at,
        "last_used_at": grant.last_used_at,
    }


@blueprint.get("")
@documented(query=PageQuery, responses={200: OAuthGrantPage}, errors=(403, 422))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def list_grants() -> dict[str, Any]:
    """The apps the caller authorized and has not revoked, oldest first, paginated."""
    principal = await require_principal()
    page = pagination()
    session = get_session()
    live = (
        OAuthGrant.user_id == principal.user_id,
        OAuthGrant.code_used_at.is_not(None),
        OAuthGrant.revoked_at.is_(None),
    )
    total = (await session.execute(select(func.count()).where(*live))).scalar_one()
    rows = await session.execute(
        select(OAuthGrant, OAuthClient.client_name)
        .join(OAuthClient, OAuthGrant.client_id == OAuthClient.id)
        .where(*live)
        .order_by(OAuthGrant.created_at, OAuthGrant.id)
        .offset(page.offset)
        .limit(page.size)
    )
    return page_envelope([_grant_body(grant, name) for grant, name in rows.all()], total, page)


@blueprint.delete("/<grant_id>")
@documented(responses={204: NoContent}, errors=(403, 404))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def revoke(grant_id: str) -> tuple[str, int]:
    """Revoke an app's access: its tokens stop working (unknown or revoked: 404)."""
    principal = await require_principal()
    session = get_session()
    grant = await session.get(OAuthGrant, parse_uuid(grant_id))
    if grant is None or grant.revoked_at is not None or grant.code_used_at is None:
        raise NotFound("No such authorization.")
    if grant.user_id != principal.user_id:
        raise Forbidden("Only the user who authorized the app may revoke it.")
    await revoke_grant(session, grant)
    return "", 204
