"""ShareLink: a public link to a user's profile; the secret is stored hashed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from quart_api.models.api_token import ApiToken, expiry, hash_secret
from quart_api.models.base import BaseModel, UTCDateTime, utcnow

if TYPE_CHECKING:
    from quart_api.models.user import User

__all__ = ["ShareLink"]


class ShareLink(BaseModel):
    """A share link of one user. Look it up by `hash_secret(secret)` (indexed,
    unique); the secret itself exists only in the URL handed to the user.

    A link stops working when it expires (`expires_at`, none: never) or is revoked
    (`revoked_at`); both are kept as rows, so a revoked link stays unknown.
    """

    __tablename__ = "share_links"

    __default_fields__ = ("id", "created_at", "expires_at")
    __hidden_fields__ = frozenset({"token_hash"})
    __readonly_fields__ = frozenset({"user_id", "expires_at", "revoked_at"})

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="share_links", lazy="raise_on_sql")

    hash_secret = staticmethod(hash_secret)

    @classmethod
    def issue(
        cls,
        user_id: uuid.UUID,
        expires_in: timedelta | None = None,
        *,
        not_after: datetime | None = None,
    ) -> tuple[ShareLink, str]:
        """A new link (not yet added to a session) and its secret, shown only now.

        It expires after ``expires_in`` (never when ``None``), and never later than
        ``not_after`` when given.
        """
        secret = ApiToken.generate_secret()
        expires_at = expiry(expires_in, not_after)
        return cls(user_id=user_id, token_hash=hash_secret(secret), expires_at=expires_at), secret

    def is_active(self, now: datetime | None = None) -> bool:
        """Not revoked and not expired at `now` (default: the current time)."""
        now = now or utcnow()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now
