"""Share links: a secret URL to a user's public profile, the ``@protected`` showcase.

Tokens are 256-bit secrets stored hashed; a client guessing them gets 404s, and
after ``PROTECT_LIMIT`` misses it is blocked (still a 404, so it learns
nothing) without the view, or the database, being reached.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, url_for
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from werkzeug.exceptions import NotFound

from quart_api.api.common import api_view
from quart_api.api.openapi import documented
from quart_api.api.schemas import ShareLinkEnvelope, UserEnvelope
from quart_api.auth import require_principal, requires_scopes
from quart_api.db import get_session
from quart_api.guards import protected, rate_limited
from quart_api.models import ShareLink, hash_secret

__all__ = ["blueprint"]

blueprint = Blueprint("share", __name__, url_prefix="/api/v1")


@blueprint.post("/users/current/share")
@documented(responses={201: ShareLinkEnvelope}, errors=(401, 403))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:write")
@api_view
async def create_share_link() -> tuple[dict[str, Any], int]:
    """A new link to the caller's public profile: ``{"token", "url"}``, shown once."""
    principal = await require_principal()
    link, secret = ShareLink.issue(principal.user_id)
    session = get_session()
    session.add(link)
    await session.commit()
    url = url_for("share.shared_profile", token=secret, _external=True)
    return {"data": {"token": secret, "url": url}}, 201


@blueprint.get("/share/<token>")
@documented(responses={200: UserEnvelope}, errors=(404,))
@rate_limited(config="API_RATE_LIMIT")
@protected(config="PROTECT_LIMIT")
@api_view
async def shared_profile(token: str) -> dict[str, Any]:
    """The public profile behind a share link (default fields only)."""
    if len(token) > 128:
        raise NotFound("No such share link.")
    link = (
        await get_session().execute(
            select(ShareLink)
            .options(joinedload(ShareLink.user))
            .where(ShareLink.token_hash == hash_secret(token))
        )
    ).scalar_one_or_none()
    if link is None:
        raise NotFound("No such share link.")
    return {"data": link.user.to_dict()}
