"""Share links expire and can be revoked.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

`share_links` gains `expires_at` (NULL: never) and `revoked_at` (NULL: live), as
`api_tokens` has them. Existing links keep working: both are NULL for them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("share_links") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def _share_links_at_0003() -> sa.Table:
    """The table as this revision leaves it: SQLite's batch copy then needs no reflection
    (which would reflect ``users`` through the foreign key, expression index and all)."""
    return sa.Table(
        "share_links",
        sa.MetaData(),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_share_links_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_share_links"),
        sa.UniqueConstraint("token_hash", name="uq_share_links_token_hash"),
        sa.Index("ix_share_links_user_id", "user_id"),
    )


def downgrade() -> None:
    with op.batch_alter_table("share_links", copy_from=_share_links_at_0003()) as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("expires_at")
