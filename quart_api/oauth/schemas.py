"""OpenAPI models of the OAuth JSON routes (documentation only; the views validate).

The numbers come from the models and the validators, so the published schema
and the checks cannot drift apart.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field

from quart_api.models.oauth import MAX_REDIRECT_URI_LENGTH, MAX_REDIRECT_URIS
from quart_api.oauth.scopes import MAX_SCOPE_LENGTH

__all__ = [
    "AuthorizationServerMetadata",
    "OAuthClientCreateRequest",
    "OAuthClientCreatedEnvelope",
    "OAuthClientEnvelope",
    "OAuthClientPage",
    "OAuthClientUpdateRequest",
    "OAuthGrantPage",
]

AuthMethod = Literal["none", "client_secret_basic", "client_secret_post"]
_RedirectUris = list[str]
_REDIRECT_URIS = Field(
    min_length=1,
    max_length=MAX_REDIRECT_URIS,
    json_schema_extra={"items": {"type": "string", "maxLength": MAX_REDIRECT_URI_LENGTH}},
    description="Absolute https URIs (http only on 127.0.0.1 or [::1]), matched exactly.",
)
_SCOPE = Field(
    default=None,
    max_length=MAX_SCOPE_LENGTH,
    description="Space-separated scopes the app may ask for (default: all an app may have).",
)


class OAuthClientCreateRequest(Schema):
    """RFC 7591 client metadata of a new app."""

    model_config = ConfigDict(extra="forbid")
    client_name: str = Field(min_length=1, max_length=100)
    redirect_uris: _RedirectUris = _REDIRECT_URIS
    token_endpoint_auth_method: AuthMethod = "client_secret_basic"  # noqa: S105
    scope: str | None = _SCOPE


class OAuthClientUpdateRequest(Schema):
    """A partial update of an app (its authentication method is fixed)."""

    model_config = ConfigDict(extra="forbid")
    client_name: str = Field(default=None, min_length=1, max_length=100)  # type: ignore[assignment]
    redirect_uris: _RedirectUris = Field(
        default=None,  # type: ignore[arg-type]
        min_length=1,
        max_length=MAX_REDIRECT_URIS,
        json_schema_extra={"items": {"type": "string", "maxLength": MAX_REDIRECT_URI_LENGTH}},
    )
    scope: str = Field(default=None, max_length=MAX_SCOPE_LENGTH)  # type: ignore[assignment]


class OAuthClientPublic(Schema):
    """A registered app (RFC 7591 2 and 3.2.1)."""

    client_id: uuid.UUID
    client_name: str
    redirect_uris: list[str]
    token_endpoint_auth_method: AuthMethod
    scope: str
    grant_types: list[str]
    response_types: list[str]
    client_id_issued_at: int
    created_at: datetime
    modified_at: datetime


class OAuthClientCreated(OAuthClientPublic):
    """A new (or re-keyed) app; a confidential one with its secret, shown this once."""

    client_secret: str | None = None
    client_secret_expires_at: int | None = Field(default=None, description="0: never")


class OAuthClientEnvelope(Schema):
    """One app."""

    data: OAuthClientPublic


class OAuthClientCreatedEnvelope(Schema):
    """The app, with its secret when it has one (shown this once)."""

    data: OAuthClientCreated


class OAuthClientPage(Schema):
    """A page of the caller's apps."""

    data: list[OAuthClientPublic]
    total: int
    page: int
    total_pages: int
    next_page: int | None
    prev_page: int | None


class OAuthGrantPublic(Schema):
    """An app the caller authorized, and what it may do."""

    id: uuid.UUID
    client_id: uuid.UUID
    client_name: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None


class OAuthGrantPage(Schema):
    """A page of the apps the caller authorized."""

    data: list[OAuthGrantPublic]
    total: int
    page: int
    total_pages: int
    next_page: int | None
    prev_page: int | None


class AuthorizationServerMetadata(Schema):
    """RFC 8414 authorization server metadata."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str
    registration_endpoint: str
    scopes_supported: list[str]
    response_types_supported: list[str]
    response_modes_supported: list[str]
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    code_challenge_methods_supported: list[str]
    authorization_response_iss_parameter_supported: bool
    service_documentation: str
