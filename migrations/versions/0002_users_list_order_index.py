"""Index users by (created_at, id), the list's stable order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

`GET /api/v1/users` pages through users ordered by (created_at, id); without this
index every page sorts the whole table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_users_created_at_id", "users", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_users_created_at_id", table_name="users")
