"""User: case-insensitively unique username, argon2 password, server-side session version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from sqlalchemy import Boolean, Index, Integer, String, false, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from quart_api.models._fields import WriteOnly
from quart_api.models.base import BaseModel
from quart_api.passwords import ahash_password, hash_password

if TYPE_CHECKING:
    from quart_api.models.api_token import ApiToken
    from quart_api.models.share_link import ShareLink

__all__ = ["USERNAME_PATTERN", "User", "normalize_username"]

#: ASCII only, so Python's `str.lower()` and the database's `lower()` agree.
USERNAME_PATTERN: Final = r"^[A-Za-z0-9_.-]+$"
#: An ASCII dot-atom address (RFC 5322 without quoted local parts or IP literals):
#: strict enough that every stored address also passes OpenAPI's `format: email`.
#: Real proof of an address is a confirmation mail, not a regular expression.
EMAIL_PATTERN: Final = (
    r"^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


def normalize_username(username: str) -> str:
    """The form usernames are compared in: lower-case.

    The single normalization behind the unique index (`lower(username)`) and every
    lookup, `get_or_create` included, so `Alice` and `alice` are one account.
    """
    return username.lower()


class User(BaseModel):
    """An account. `password` is write-only (hashed into the hidden `password_hash`).

    `session_version` is hidden and bumped by `end_sessions()` (logout everywhere,
    password change): the auth layer stores it in the signed session cookie and
    rejects a cookie whose version differs, so old cookies die server-side.
    """

    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_username_lower", func.lower(text("username")), unique=True),
        # The list's stable order (created_at, id): an index scan, not a sort of the table.
        Index("ix_users_created_at_id", "created_at", "id"),
    )

    __default_fields__ = ("id", "username", "full_name", "created_at", "modified_at")
    __hidden_fields__ = frozenset({"password_hash", "session_version"})
    __readonly_fields__ = frozenset({"is_admin"})
    __writeonly_fields__: ClassVar = {
        "password": WriteOnly(
            "set_password", "password_hash", min_length=8, max_length=1024, required=True
        ),
    }

    username: Mapped[str] = mapped_column(
        String(64),
        info={
            "min_length": 3,
            "pattern": USERNAME_PATTERN,
            "pattern_hint": "may contain only letters, digits, '_', '.' and '-'",
        },
    )
    email: Mapped[str | None] = mapped_column(
        String(254),
        info={
            "pattern": EMAIL_PATTERN,
            "pattern_hint": "is not an e-mail address",
            "format": "email",
        },
    )
    full_name: Mapped[str | None] = mapped_column(String(200))
    # NULL: no password login (for example a user created by an admin without one).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    api_tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise_on_sql",
    )
    share_links: Mapped[list[ShareLink]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise_on_sql",
    )

    @classmethod
    def lookup_clause(cls, name: str, value: Any) -> ColumnElement[bool]:
        """Usernames are matched through `normalize_username` (uses the unique index)."""
        if name == "username" and isinstance(value, str):
            return func.lower(cls.username) == normalize_username(value)
        return super().lookup_clause(name, value)

    @classmethod
    async def by_username(cls, session: AsyncSession, username: str) -> User | None:
        """The user whose username equals `username` case-insensitively, or None."""
        if "\x00" in username:
            # No stored name has one (validation refuses it), and PostgreSQL refuses
            # it even in a query: a login with one would be a 500, not a 401.
            return None
        query = select(cls).where(cls.lookup_clause("username", username))
        return (await session.execute(query)).scalars().first()

    def set_password(self, password: str) -> None:
        """Hash `password` into `password_hash` (blocks for one hash: ~50 ms at
        production cost). Replacing an existing password ends other sessions."""
        self.set_password_hash(hash_password(password))

    async def aset_password(self, password: str) -> None:
        """`set_password` with the hashing in a worker thread (`afrom_dict` uses it)."""
        self.set_password_hash(await ahash_password(password))

    def set_password_hash(self, password_hash: str) -> None:
        """Store a hash made beforehand (`ahash_password`, outside any transaction).
        Replacing an existing password ends other sessions."""
        if self.password_hash is not None:
            self.end_sessions()
        self.password_hash = password_hash

    def end_sessions(self) -> None:
        """Invalidate every session cookie issued so far (they carry the old version)."""
        self.session_version = (self.session_version or 0) + 1
