"""``/.well-known/oauth-authorization-server``: RFC 8414 metadata.

Built per request from :mod:`~quart_api.oauth.urls` (``PUBLIC_URL`` when set), never
cached under a key that ignores the host, so no request can plant another issuer.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from quart_api.api.openapi import documented
from quart_api.guards import rate_limited
from quart_api.json_provider import dumps_bytes
from quart_api.models.oauth import CLIENT_AUTH_METHODS
from quart_api.oauth.schemas import AuthorizationServerMetadata
from quart_api.oauth.scopes import GRANTABLE_SCOPES
from quart_api.oauth.urls import absolute_url, issuer

__all__ = ["authorization_server_metadata", "blueprint"]

blueprint = Blueprint("oauth_metadata", __name__)


def authorization_server_metadata() -> dict[str, Any]:
    """The server's RFC 8414 metadata document."""
    return {
        "issuer": issuer(),
        "authorization_endpoint": absolute_url("/oauth/authorize"),
        "token_endpoint": absolute_url("/oauth/token"),
        "revocation_endpoint": absolute_url("/oauth/revoke"),
        # RFC 7591 registration, protected: a user's session or token with tokens:write.
        "registration_endpoint": absolute_url("/api/v1/oauth/clients"),
        "scopes_supported": list(GRANTABLE_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "service_documentation": absolute_url("/docs"),
    }


@blueprint.get("/.well-known/oauth-authorization-server")
@documented(responses={200: AuthorizationServerMetadata})
@rate_limited(config="API_RATE_LIMIT", user=False)
async def metadata() -> Response:
    """RFC 8414 metadata (cacheable by clients for an hour, shared caches included)."""
    return Response(
        dumps_bytes(authorization_server_metadata()),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=3600", "Vary": "Host"},
    )
