"""ApiToken: a bearer token, stored as the SHA-256 of its secret only."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from quart_api.models.base import BaseModel, UTCDateTime, utcnow

if TYPE_CHECKING:
    from quart_api.models.user import User

__all__ = ["ApiToken", "expiry", "hash_secret"]


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a token secret: what the database stores and is
    searched by. The secret has 256 bits of entropy, so a fast hash is enough (no
    argon2 needed) and lookups stay one indexed equality."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def expiry(expires_in: timedelta | None, not_after: datetime | None = None) -> datetime | None:
    """When a credential made now expires: after ``expires_in`` (``None``: never),
    and no later than ``not_after``."""
    expires_at = utcnow() + expires_in if expires_in is not None else None
    if not_after is not None and (expires_at is None or expires_at > not_after):
        return not_after
    return expires_at


class ApiToken(BaseModel):
    """A named, scoped, revocable API token of one user.

    The secret is shown once at creation (`issue` returns it) and never stored:
    `token_hash` is hidden. Writable by clients: `name` and `scopes` only.
    """

    __tablename__ = "api_tokens"

    __default_fields__ = ("id", "name", "scopes", "created_at", "expires_at", "last_used_at")
    __hidden_fields__ = frozenset({"token_hash", "grant_id"})
    __readonly_fields__ = frozenset({"user_id", "expires_at", "last_used_at", "revoked_at"})

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100), info={"min_length": 1})
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: A JSON list of scope strings, e.g. `["users:read", "users:write"]`.
    scopes: Mapped[list[str]] = mapped_column(
        JSON, default=list, info={"python_type": list, "item_type": str, "max_length": 32}
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The OAuth grant an access token was issued under (None: a personal token).
    #: Revoking the grant revokes its tokens; deleting it deletes them.
    grant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("oauth_grants.id", ondelete="CASCADE"), index=True
    )

    user: Mapped[User] = relationship(back_populates="api_tokens", lazy="raise_on_sql")

    hash_secret = staticmethod(hash_secret)

    @staticmethod
    def generate_secret() -> str:
        """A new token secret: 32 random bytes, URL-safe base64 (43 characters)."""
        return secrets.token_urlsafe(32)

    @classmethod
    def issue(
        cls,
        user_id: uuid.UUID,
        name: str,
        scopes: list[str],
        expires_in: timedelta | None = None,
        *,
        not_after: datetime | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token (not yet added to a session) and its secret, shown only now.

        It expires after ``expires_in`` (never when ``None``), and never later than
        ``not_after`` when given: a token made with a token does not outlive it.
        """
        secret = cls.generate_secret()
        token = cls(
            user_id=user_id,
            name=name,
            scopes=list(scopes),
            token_hash=hash_secret(secret),
            expires_at=expiry(expires_in, not_after),
        )
        return token, secret

    def is_active(self, now: datetime | None = None) -> bool:
        """Not revoked and not expired at `now` (default: the current time)."""
        now = now or utcnow()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now
