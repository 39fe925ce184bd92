"""ShareLink: a public link to a user's profile; the secret is stored hashed."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from quart_api.models.api_token import ApiToken, hash_secret
from quart_api.models.base import BaseModel

if TYPE_CHECKING:
    from quart_api.models.user import User

__all__ = ["ShareLink"]


class ShareLink(BaseModel):
    """A share link of one user. Look it up by `hash_secret(secret)` (indexed,
    unique); the secret itself exists only in the URL handed to the user."""

    __tablename__ = "share_links"

    __default_fields__ = ("id", "created_at")
    __hidden_fields__ = frozenset({"token_hash"})
    __readonly_fields__ = frozenset({"user_id"})

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)

    user: Mapped[User] = relationship(back_populates="share_links", lazy="raise_on_sql")

    hash_secret = staticmethod(hash_secret)

    @classmethod
    def issue(cls, user_id: uuid.UUID) -> tuple[ShareLink, str]:
        """A new link (not yet added to a session) and its secret, shown only now."""
        secret = ApiToken.generate_secret()
        return cls(user_id=user_id, token_hash=hash_secret(secret)), secret
