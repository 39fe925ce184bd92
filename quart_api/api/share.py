"""Share links: a secret URL to a user's public profile, the ``@protected`` showcase.

Tokens are 256-bit secrets stored hashed; a client guessing them gets 404s, and
after ``PROTECT_LIMIT`` misses it is blocked (still a 404, so it learns
nothing) without the view, or the database, being reached. An expired or revoked
link is a 404 like an unknown one, and counts as a miss.

The owner creates (``expires_in`` optional; a link made with a token never outlives
that token), lists (no secrets) and revokes links, at most ``MAX_LIVE_SHARE_LINKS``
live at a time. A link's ``url`` starts with ``PUBLIC_URL`` when it is set and is a
path otherwise: never the request's ``Host``, which the client chooses. Responses
that carry a secret, or are reached through one, are ``Cache-Control: no-store``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quart import Blueprint, current_app, url_for
from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload
from sqlalchemy.sql.elements import ColumnElement
from werkzeug.exceptions import Forbidden, NotFound

from quart_api.api.common import (
    api_view,
    enforce_holding_limit,
    expires_in,
    optional_json_body,
    parse_uuid,
)
from quart_api.api.openapi import documented
from quart_api.api.schemas import (
    NoContent,
    ShareLinkCreatedEnvelope,
    ShareLinkCreateRequest,
    ShareLinkListEnvelope,
    UserEnvelope,
)
from quart_api.auth import NO_STORE, require_principal, requires_scopes
from quart_api.db import get_session
from quart_api.guards import protected, rate_limited
from quart_api.models import ShareLink, ValidationError, hash_secret, utcnow
from quart_api.settings import Settings

__all__ = ["MAX_LIVE_SHARE_LINKS", "blueprint"]

blueprint = Blueprint("share", __name__, url_prefix="/api/v1")

#: Live (unrevoked, unexpired) share links one user may hold.
MAX_LIVE_SHARE_LINKS = 100
_OWN = "/users/current/share"


def _share_url(secret: str) -> str:
    """``PUBLIC_URL`` + the link's path, or the path alone when ``PUBLIC_URL`` is unset."""
    path = url_for("share.shared_profile", token=secret)
    settings: Settings = current_app.extensions["settings"]
    if settings.public_url is None:
        return path
    return settings.public_url.rstrip("/") + path


def _live(now: datetime) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Where-clauses of the links that work at ``now``: not revoked, not expired."""
    return ShareLink.revoked_at.is_(None), or_(
        ShareLink.expires_at.is_(None), ShareLink.expires_at > now
    )


@blueprint.post(_OWN)
@documented(
    request=ShareLinkCreateRequest,
    responses={201: ShareLinkCreatedEnvelope},
    errors=(400, 401, 403, 409, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:write")
@api_view
async def create_share_link() -> tuple[dict[str, Any], int, dict[str, str]]:
    """A new link to the caller's public profile, its secret shown this once.

    The body is optional: ``{expires_in?}`` in seconds (none: the link never expires).
    """
    principal = await require_principal()
    data = await optional_json_body()
    errors = [{"field": k, "message": "unknown field"} for k in data if k != "expires_in"]
    lifetime = expires_in(data, errors)
    if errors:
        raise ValidationError(errors)
    now = utcnow()
    await enforce_holding_limit(
        principal.user_id,
        select(func.count())
        .select_from(ShareLink)
        .where(ShareLink.user_id == principal.user_id, *_live(now)),
        MAX_LIVE_SHARE_LINKS,
        "share links",
    )
    link, secret = ShareLink.issue(principal.user_id, lifetime, not_after=principal.expires_at)
    session = get_session()
    session.add(link)
    await session.commit()
    body = {"id": str(link.id), "token": secret, "url": _share_url(secret)}
    body["expires_at"] = link.to_dict()["expires_at"]
    return {"data": body}, 201, {"Cache-Control": NO_STORE}


@blueprint.get(_OWN)
@documented(responses={200: ShareLinkListEnvelope}, errors=(401, 403))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:read")
@api_view
async def list_share_links() -> dict[str, Any]:
    """The caller's live links, oldest first (their secrets are never shown again)."""
    principal = await require_principal()
    links = (
        await get_session().execute(
            select(ShareLink)
            .where(ShareLink.user_id == principal.user_id, *_live(utcnow()))
            .order_by(ShareLink.created_at, ShareLink.id)
        )
    ).scalars()
    return {"data": [link.to_dict() for link in links]}


@blueprint.delete(_OWN + "/<link_id>")
@documented(responses={204: NoContent}, errors=(401, 403, 404))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:write")
@api_view
async def revoke_share_link(link_id: str) -> tuple[str, int]:
    """Revoke one of the caller's links; it is a 404 at once.

    Unknown (or already revoked) is 404; another user's link is 403, as for tokens.
    """
    principal = await require_principal()
    session = get_session()
    link = await session.get(ShareLink, parse_uuid(link_id))
    if link is None or link.revoked_at is not None:
        raise NotFound("No such share link.")
    if link.user_id != principal.user_id:
        raise Forbidden("Only the link's owner may revoke it.")
    link.revoked_at = utcnow()
    await session.commit()
    return "", 204


@blueprint.get("/share/<token>")
@documented(responses={200: UserEnvelope}, errors=(404,))
@rate_limited(config="API_RATE_LIMIT")
@protected(config="PROTECT_LIMIT")
@api_view
async def shared_profile(token: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The public profile behind a live share link (default fields only)."""
    if len(token) > 128:
        raise NotFound("No such share link.")
    link = (
        await get_session().execute(
            select(ShareLink)
            .options(joinedload(ShareLink.user))
            .where(ShareLink.token_hash == hash_secret(token))
        )
    ).scalar_one_or_none()
    if link is None or not link.is_active():
        raise NotFound("No such share link.")
    return {"data": link.user.to_dict()}, 200, {"Cache-Control": NO_STORE}
