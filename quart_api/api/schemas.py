"""OpenAPI models of the API, derived from the models' field rules.

Request bodies and user/token representations are built from
``BaseModel.writable_fields()`` / ``readable_fields()``: the same
:class:`~quart_api.models.FieldRule` objects ``from_dict`` validates with, so
the published schema and the validator cannot disagree. The models here only
document; validation happens in ``from_dict`` (422 with per-field errors).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field, create_model

from quart_api.api.common import MAX_EXPIRES_IN
from quart_api.auth import KNOWN_SCOPES
from quart_api.models import ApiToken, FieldRule, ShareLink, User

__all__ = [
    "FieldErrorSchema",
    "HealthSchema",
    "LoginRequest",
    "NoContent",
    "PageQuery",
    "PasswordChangeRequest",
    "ProblemSchema",
    "ReadySchema",
    "ShareLinkCreateRequest",
    "ShareLinkCreatedEnvelope",
    "ShareLinkListEnvelope",
    "TokenCreateRequest",
    "TokenCreatedEnvelope",
    "TokenListEnvelope",
    "UserCreateRequest",
    "UserEnvelope",
    "UserPage",
    "UserPublic",
    "UserUpdateRequest",
]


def _from_rules(
    name: str,
    rules: Mapping[str, FieldRule],
    *,
    required: Iterable[str] = (),
    forbid_extra: bool = True,
    doc: str,
) -> type[Schema]:
    """A documentation-only model whose properties are the rules' JSON schemas."""
    must = set(required)
    fields: dict[str, Any] = {}
    for field_name, rule in rules.items():
        schema = rule.json_schema()
        if field_name in must:
            fields[field_name] = (Any, Field(json_schema_extra=schema))
        else:
            fields[field_name] = (Any, Field(default=None, json_schema_extra=schema))
    model = create_model(
        name,
        __config__=ConfigDict(extra="forbid" if forbid_extra else "allow"),
        __doc__=doc,
        **fields,
    )
    return model  # type: ignore[no-any-return]


_user_writable = User.writable_fields()
_user_readable = User.readable_fields()

UserCreateRequest = _from_rules(
    "UserCreateRequest",
    _user_writable,
    required=[n for n, r in _user_writable.items() if r.required],
    doc="Sign-up: username and password are required.",
)
UserUpdateRequest = _from_rules(
    "UserUpdateRequest", _user_writable, doc="Partial update: any writable field."
)
UserPublic = _from_rules(
    "User",
    {n: r for n, r in _user_readable.items() if n not in ("email", "is_admin")}
    | {"email": _user_readable["email"], "is_admin": _user_readable["is_admin"]},
    required=[n for n in User.__default_fields__],
    forbid_extra=True,
    doc="A user; email and is_admin appear only for the user themself or an admin.",
)

_token_readable = {
    n: r for n, r in ApiToken.readable_fields().items() if n in ApiToken.__default_fields__
}
TokenPublic = _from_rules(
    "ApiToken", _token_readable, required=list(_token_readable), doc="An API token."
)


_link_readable = {
    n: r for n, r in ShareLink.readable_fields().items() if n in ShareLink.__default_fields__
}
ShareLinkPublic = _from_rules(
    "ShareLinkInfo", _link_readable, required=list(_link_readable), doc="A share link, no secret."
)
_ShareLinkCreatedBase = _from_rules(
    "ShareLinkCreatedBase",
    {n: _link_readable[n] for n in ("id", "expires_at")},
    required=["id", "expires_at"],
    doc="A new share link.",
)


class PageQuery(Schema):
    """Pagination: ``page`` from 1, ``per_page`` 1..100 (default 20)."""

    page: int = Field(default=1, ge=1, le=1_000_000_000)
    per_page: int = Field(default=20, ge=1, le=100)


class TokenCreateRequest(Schema):
    """A new token: a name, its scopes, and optionally its lifetime in seconds."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(
        max_length=32, json_schema_extra={"items": {"type": "string", "enum": list(KNOWN_SCOPES)}}
    )
    expires_in: int | None = Field(default=None, ge=1, le=MAX_EXPIRES_IN)


class TokenCreated(TokenPublic):  # type: ignore[misc,valid-type]
    """A new token, with its secret shown this once."""

    token: str


class LoginRequest(Schema):
    """Credentials for a cookie session."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class PasswordChangeRequest(Schema):
    """The current password and the new one."""

    model_config = ConfigDict(extra="forbid")
    old_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class UserEnvelope(Schema):
    """One user."""

    data: UserPublic  # type: ignore[valid-type]


class UserPage(Schema):
    """A page of users."""

    data: list[UserPublic]  # type: ignore[valid-type]
    total: int
    page: int
    total_pages: int
    next_page: int | None
    prev_page: int | None


class TokenCreatedEnvelope(Schema):
    """The created token."""

    data: TokenCreated


class TokenListEnvelope(Schema):
    """The caller's active tokens."""

    data: list[TokenPublic]  # type: ignore[valid-type]


class ShareLinkCreateRequest(Schema):
    """A new share link; the body is optional. ``expires_in`` in seconds (none: never)."""

    model_config = ConfigDict(extra="forbid")
    expires_in: int | None = Field(default=None, ge=1, le=MAX_EXPIRES_IN)


class ShareLinkCreated(_ShareLinkCreatedBase):  # type: ignore[misc,valid-type]
    """A new share link with its secret, shown this once. ``url`` is absolute when
    the service's ``PUBLIC_URL`` is set, else a path."""

    token: str
    url: str


class ShareLinkCreatedEnvelope(Schema):
    """The created share link."""

    data: ShareLinkCreated


class ShareLinkListEnvelope(Schema):
    """The caller's live share links."""

    data: list[ShareLinkPublic]  # type: ignore[valid-type]


class FieldErrorSchema(Schema):
    field: str
    message: str


class ProblemSchema(Schema):
    """An RFC 9457 problem (``application/problem+json``)."""

    type: str = "about:blank"
    status: int
    title: str
    detail: str | None = None
    errors: list[FieldErrorSchema] | None = None


class NoContent(Schema):
    """No body."""


class HealthSchema(Schema):
    """The process is alive."""

    status: str


class ReadySchema(Schema):
    """Each backend's state."""

    status: str
    checks: dict[str, str]
