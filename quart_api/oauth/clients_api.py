"""``/api/v1/oauth/clients``: the apps a user registers (RFC 7591 metadata).

``POST`` registers one: ``{client_name, redirect_uris, token_endpoint_auth_method?,
scope?}`` -> 201 with ``client_id`` and, for a confidential client, its
``client_secret``, shown this once and stored hashed. ``GET`` lists the caller's
apps, ``GET/PATCH/DELETE /<client_id>`` reads, changes or deletes one, and
``POST /<client_id>/secret`` replaces a confidential app's secret. Another user's
app is 403, an unknown one 404, as for every resource. A user has at most
``MAX_CLIENTS`` apps at a time (409 past it), as for tokens and share links. All
need ``tokens:write``: apps are credentials, managed by the user (never by an app:
no OAuth token carries that scope).

Deleting an app deletes its grants and their tokens (the database cascades);
this worker forgets the affected users' cached principals at once.
"""

from __future__ import annotations

import secrets
from typing import Any

from quart import Blueprint, Response
from sqlalchemy import delete, func, select
from werkzeug.exceptions import Conflict, Forbidden, NotFound

from quart_api.api.common import (
    api_view,
    enforce_holding_limit,
    json_body,
    page_envelope,
    pagination,
    parse_uuid,
)
from quart_api.api.openapi import documented
from quart_api.api.schemas import NoContent, PageQuery
from quart_api.auth import forget_principals, require_principal, requires_scopes
from quart_api.db import get_session
from quart_api.guards import rate_limited
from quart_api.json_provider import dumps_bytes
from quart_api.models import OAuthClient, OAuthGrant, ValidationError, hash_secret
from quart_api.models.oauth import CLIENT_AUTH_METHODS
from quart_api.oauth.errors import NO_STORE
from quart_api.oauth.redirect_uris import redirect_uri_problem
from quart_api.oauth.schemas import (
    OAuthClientCreatedEnvelope,
    OAuthClientCreateRequest,
    OAuthClientEnvelope,
    OAuthClientPage,
    OAuthClientUpdateRequest,
)
from quart_api.oauth.scopes import GRANTABLE_SCOPES, ScopeError, format_scope, parse_scope

__all__ = ["MAX_CLIENTS", "blueprint", "client_body"]

blueprint = Blueprint("oauth_clients", __name__, url_prefix="/api/v1/oauth/clients")

#: Apps one user may have registered at a time; past it, registering one is 409.
MAX_CLIENTS = 100
_CREATE_FIELDS = frozenset({"client_name", "redirect_uris", "token_endpoint_auth_method", "scope"})
_UPDATE_FIELDS = frozenset({"client_name", "redirect_uris", "scope"})


def client_body(client: OAuthClient, secret: str | None = None) -> dict[str, Any]:
    """An app as RFC 7591 3.2.1 describes a registration (``secret`` when just made)."""
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_name": client.client_name,
        "redirect_uris": list(client.redirect_uris),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "scope": format_scope(client.scopes),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_id_issued_at": int(client.created_at.timestamp()),
        "created_at": client.created_at,
        "modified_at": client.modified_at,
    }
    if secret is not None:
        body["client_secret"] = secret
        body["client_secret_expires_at"] = 0
    return body


def _secret_response(body: dict[str, Any], status: int) -> Response:
    """A response revealing a secret: never stored by any cache."""
    return Response(
        dumps_bytes({"data": body}),
        status=status,
        content_type="application/json",
        headers=NO_STORE,
    )


def _validate(data: dict[str, Any], allowed: frozenset[str], *, create: bool) -> dict[str, Any]:
    """The model's columns from RFC 7591 fields; every problem named at once."""
    errors: list[dict[str, str]] = []
    for name in data:
        if name not in allowed:
            message = (
                "cannot be changed: register a new app to change how it authenticates"
                if name == "token_endpoint_auth_method"
                else "unknown field"
            )
            errors.append({"field": name, "message": message})
    columns: dict[str, Any] = {}
    rules = OAuthClient.writable_fields()
    for name in ("client_name", "redirect_uris"):
        if name not in data:
            if create:
                errors.append({"field": name, "message": "field is required"})
            continue
        value, problem = rules[name].check(data[name])
        if problem is None and name == "redirect_uris":
            problems = [
                f"item {index}: {p}"
                for index, uri in enumerate(value, 1)
                if (p := redirect_uri_problem(uri)) is not None
            ]
            problem = "; ".join(problems) or None
            value = list(dict.fromkeys(value))  # duplicates dropped, order kept
        if problem is not None:
            errors.append({"field": name, "message": problem})
        else:
            columns[name] = value
    if "token_endpoint_auth_method" in allowed:
        method = data.get("token_endpoint_auth_method", "client_secret_basic")
        if method not in CLIENT_AUTH_METHODS:
            errors.append(
                {
                    "field": "token_endpoint_auth_method",
                    "message": f"must be one of: {', '.join(CLIENT_AUTH_METHODS)}",
                }
            )
        else:
            columns["token_endpoint_auth_method"] = method
    scope = data.get("scope")
    if "scope" in data and (scope is not None or not create):
        if not isinstance(scope, str):
            errors.append(
                {"field": "scope", "message": "must be a string of space-separated scopes"}
            )
        else:
            try:
                columns["scopes"] = list(parse_scope(scope))
            except ScopeError as error:
                errors.append({"field": "scope", "message": str(error)})
            else:
                if not columns["scopes"]:
                    errors.append({"field": "scope", "message": "must name at least one scope"})
    elif create:
        columns["scopes"] = list(GRANTABLE_SCOPES)
    if errors:
        raise ValidationError(errors)
    return columns


async def _own_client(client_id: str) -> OAuthClient:
    principal = await require_principal()
    client = await get_session().get(OAuthClient, parse_uuid(client_id))
    if client is None:
        raise NotFound("No such app.")
    if client.user_id != principal.user_id:
        raise Forbidden("Only the app's owner may see or change it.")
    return client


@blueprint.post("")
@documented(
    request=OAuthClientCreateRequest,
    responses={201: OAuthClientCreatedEnvelope},
    errors=(400, 403, 409, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def register_client() -> Response:
    """Register an app; a confidential one gets its secret in this answer only.

    409 when the user already has ``MAX_CLIENTS`` apps (concurrent registrations are
    counted one after another, so they cannot overshoot it together).
    """
    principal = await require_principal()
    columns = _validate(await json_body(), _CREATE_FIELDS, create=True)
    await enforce_holding_limit(
        principal.user_id,
        select(func.count()).where(OAuthClient.user_id == principal.user_id),
        MAX_CLIENTS,
        "OAuth apps",
    )
    client = OAuthClient(user_id=principal.user_id, **columns)
    secret = None
    if not client.is_public:
        secret = secrets.token_urlsafe(32)
        client.secret_hash = hash_secret(secret)
    session = get_session()
    session.add(client)
    await session.commit()
    return _secret_response(client_body(client, secret), 201)


@blueprint.get("")
@documented(query=PageQuery, responses={200: OAuthClientPage}, errors=(403, 422))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def list_clients() -> dict[str, Any]:
    """The caller's apps, oldest first, paginated (``?page=&per_page=``)."""
    principal = await require_principal()
    page = pagination()
    session = get_session()
    mine = OAuthClient.user_id == principal.user_id
    total = (await session.execute(select(func.count()).where(mine))).scalar_one()
    clients = (
        await session.execute(
            select(OAuthClient)
            .where(mine)
            .order_by(OAuthClient.created_at, OAuthClient.id)
            .offset(page.offset)
            .limit(page.size)
        )
    ).scalars()
    return page_envelope([client_body(c) for c in clients], total, page)


@blueprint.get("/<client_id>")
@documented(responses={200: OAuthClientEnvelope}, errors=(403, 404))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def get_client(client_id: str) -> dict[str, Any]:
    """One of the caller's apps (its secret is never shown again)."""
    return {"data": client_body(await _own_client(client_id))}


@blueprint.patch("/<client_id>")
@documented(
    request=OAuthClientUpdateRequest,
    responses={200: OAuthClientEnvelope},
    errors=(400, 403, 404, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def update_client(client_id: str) -> dict[str, Any]:
    """Change an app's name, redirect URIs or scope.

    A narrower scope applies to its existing grants at their next refresh.
    """
    data = await json_body()
    client = await _own_client(client_id)
    for name, value in _validate(data, _UPDATE_FIELDS, create=False).items():
        setattr(client, name, value)
    await get_session().commit()
    return {"data": client_body(client)}


@blueprint.post("/<client_id>/secret")
@documented(responses={200: OAuthClientCreatedEnvelope}, errors=(403, 404, 409))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def rotate_secret(client_id: str) -> Response:
    """Replace a confidential app's secret (shown this once); the old one stops working."""
    client = await _own_client(client_id)
    if client.is_public:
        raise Conflict("A public app (token_endpoint_auth_method none) has no secret.")
    secret = secrets.token_urlsafe(32)
    client.secret_hash = hash_secret(secret)
    await get_session().commit()
    return _secret_response(client_body(client, secret), 200)


@blueprint.delete("/<client_id>")
@documented(responses={204: NoContent}, errors=(403, 404))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("tokens:write")
@api_view
async def delete_client(client_id: str) -> tuple[str, int]:
    """Delete an app, every authorization of it and every token it holds."""
    client = await _own_client(client_id)
    session = get_session()
    users = (
        (
            await session.execute(
                select(OAuthGrant.user_id).where(OAuthGrant.client_id == client.id).distinct()
            )
        )
        .scalars()
        .all()
    )
    await session.execute(delete(OAuthClient).where(OAuthClient.id == client.id))
    await session.commit()
    for user_id in users:
        forget_principals(user_id)
    return "", 204
