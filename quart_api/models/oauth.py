"""OAuth 2.0: the apps users register, the grants users give them, and refresh tokens.

Every secret (a client secret, an authorization code, a refresh token) is stored as
``hash_secret(secret)`` only, like API tokens: each is 256 random bits, so a fast
hash is enough and a lookup stays one indexed equality. Access tokens are rows of
``api_tokens`` that point at their grant (``ApiToken.grant_id``), so the bearer
lookup, the principal cache and revocation treat them like every other token.

- :class:`OAuthClient`: an app one user registered (RFC 7591 metadata).
- :class:`OAuthGrant`: one authorization a user gave one app: born at consent
  with its authorization code, live once the code is redeemed, dead once revoked
  (its access tokens are revoked with it, its refresh tokens die with it).
- :class:`OAuthRefreshToken`: one refresh token of a grant; used at most once
  (rotation), a second use revokes the grant (RFC 9700 4.14.2).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Final

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from quart_api.models.base import BaseModel, UTCDateTime

if TYPE_CHECKING:
    from quart_api.models.user import User

__all__ = [
    "CLIENT_AUTH_METHODS",
    "MAX_REDIRECT_URIS",
    "MAX_REDIRECT_URI_LENGTH",
    "OAuthClient",
    "OAuthGrant",
    "OAuthRefreshToken",
]

#: RFC 7591 ``token_endpoint_auth_method`` values: a public client ("none", PKCE
#: only) or a confidential one with a secret sent by HTTP Basic or in the form.
CLIENT_AUTH_METHODS: Final = ("none", "client_secret_basic", "client_secret_post")
MAX_REDIRECT_URIS: Final = 10
MAX_REDIRECT_URI_LENGTH: Final = 2000


class OAuthClient(BaseModel):
    """An app registered by one user. Its ``client_id`` is its ``id``.

    Writable by its owner: ``client_name``, ``redirect_uris`` and ``scopes``; the
    authentication method is fixed at registration (a public client never gets a
    secret), and ``secret_hash`` is hidden.
    """

    __tablename__ = "oauth_clients"

    __default_fields__ = (
        "id",
        "client_name",
        "redirect_uris",
        "token_endpoint_auth_method",
        "scopes",
        "created_at",
        "modified_at",
    )
    __hidden_fields__ = frozenset({"secret_hash"})
    __readonly_fields__ = frozenset({"user_id", "token_endpoint_auth_method"})

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    client_name: Mapped[str] = mapped_column(String(100), info={"min_length": 1})
    #: Absolute redirect URIs, matched exactly (loopback ports excepted, RFC 8252).
    redirect_uris: Mapped[list[str]] = mapped_column(
        JSON,
        info={
            "python_type": list,
            "item_type": str,
            "min_length": 1,
            "max_length": MAX_REDIRECT_URIS,
        },
    )
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    #: The most an authorization of this client may grant (a JSON list of scopes).
    scopes: Mapped[list[str]] = mapped_column(
        JSON, info={"python_type": list, "item_type": str, "max_length": 32}
    )
    #: ``hash_secret`` of the client secret; None for a public client.
    secret_hash: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(lazy="raise_on_sql")

    @property
    def client_id(self) -> str:
        """The RFC 6749 client identifier: the row's UUID as text."""
        return str(self.id)

    @property
    def is_public(self) -> bool:
        """A client without a secret: it proves itself by PKCE alone."""
        return self.token_endpoint_auth_method == "none"  # noqa: S105 - a method name


class OAuthGrant(BaseModel):
    """One authorization of one client by one user, and its authorization code.

    Pending while ``code_used_at`` is None (the code was issued, not yet redeemed);
    active once redeemed and until ``revoked_at``. The code is single-use: it is
    redeemed by one conditional UPDATE (``code_used_at IS NULL``), so of any number
    of concurrent redemptions exactly one wins.
    """

    __tablename__ = "oauth_grants"

    __default_fields__ = ("id", "scopes", "created_at", "last_used_at")
    __hidden_fields__ = frozenset({"code_hash", "code_challenge"})
    __readonly_fields__ = frozenset(
        {
            "user_id",
            "client_id",
            "redirect_uri",
            "redirect_uri_given",
            "code_expires_at",
            "code_used_at",
            "last_used_at",
            "revoked_at",
        }
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True
    )
    scopes: Mapped[list[str]] = mapped_column(
        JSON, info={"python_type": list, "item_type": str, "max_length": 32}
    )
    #: The redirect URI the code was sent to; the token request must name it again
    #: when the authorization request did (``redirect_uri_given``, RFC 6749 4.1.3).
    redirect_uri: Mapped[str] = mapped_column(String(MAX_REDIRECT_URI_LENGTH))
    redirect_uri_given: Mapped[bool] = mapped_column()
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The PKCE S256 challenge: BASE64URL(SHA256(code_verifier)), 43 characters.
    code_challenge: Mapped[str] = mapped_column(String(43))
    code_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    code_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    client: Mapped[OAuthClient] = relationship(lazy="raise_on_sql")


class OAuthRefreshToken(BaseModel):
    """A refresh token of a grant, stored hashed; good for one use (rotation)."""

    __tablename__ = "oauth_refresh_tokens"

    __default_fields__ = ("id", "created_at", "expires_at")
    __hidden_fields__ = frozenset({"token_hash"})
    __readonly_fields__ = frozenset({"grant_id", "expires_at", "used_at"})

    grant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("oauth_grants.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: Set when the token was exchanged; any later use is a replay.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
