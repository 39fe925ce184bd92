"""Seed a benchmark database: many users fast, one admin, and a bearer token for it.

Fast because it hashes the password once (argon2 costs tens of milliseconds a hash
at production settings; 10,000 users would take minutes) and inserts every row in
one multi-row ``INSERT`` batch. Every seeded user has the same password, which is
fine for load tests and nothing else. The tables are analyzed afterwards, as
autovacuum would do a minute later: without statistics PostgreSQL plans the list's
page as a sort of the whole table, and the first minute of a benchmark would
measure that plan.

Usable on its own against a migrated database (prints the admin's token)::

    DATABASE_URL=postgresql+asyncpg://... python -m bench.seed --users 10000
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from quart_api import passwords
from quart_api.auth import KNOWN_SCOPES
from quart_api.models import ApiToken, User, utcnow
from quart_api.settings import Settings

__all__ = ["ADMIN_USERNAME", "PASSWORD", "Seeded", "seed"]

ADMIN_USERNAME = "bench-admin"
#: Every seeded account's password (the locustfile logs in with it).
PASSWORD = "bench-password-1"


@dataclass(frozen=True, slots=True)
class Seeded:
    """What the benchmark needs from the seed."""

    users: int
    admin_id: uuid.UUID
    token: str


def _user_rows(count: int, password_hash: str) -> list[dict[str, Any]]:
    """``count`` users with distinct, increasing ``created_at`` (the list's sort order)."""
    start = utcnow() - timedelta(days=1)
    return [
        {
            "id": uuid.uuid4(),
            "username": f"user{i:05d}",
            "email": f"user{i:05d}@example.com",
            "full_name": f"Bench User {i}",
            "password_hash": password_hash,
            "is_admin": False,
            "session_version": 0,
            "created_at": start + timedelta(milliseconds=i),
            "modified_at": start + timedelta(milliseconds=i),
        }
        for i in range(count)
    ]


async def seed(database_url: str, users: int = 10_000) -> Seeded:
    """Insert ``users`` users and an admin, and issue the admin a token with every scope.

    The schema must exist already (``alembic upgrade head``).
    """
    # Cheap parameters: only the hash's format matters here, not its cost.
    passwords.configure(time_cost=1, memory_cost=8, parallelism=1)
    password_hash = passwords.hash_password(PASSWORD)
    engine = create_async_engine(database_url)
    try:
        rows = _user_rows(users, password_hash)
        async with engine.begin() as conn:
            await conn.execute(insert(User.__table__), rows)  # type: ignore[arg-type]
        await _analyze(engine)
        async with AsyncSession(engine, expire_on_commit=False) as session:
            admin = User(username=ADMIN_USERNAME, password_hash=password_hash, is_admin=True)
            session.add(admin)
            await session.flush()
            token, secret = ApiToken.issue(admin.id, "bench", list(KNOWN_SCOPES))
            session.add(token)
            await session.commit()
            return Seeded(users=users + 1, admin_id=admin.id, token=secret)
    finally:
        await engine.dispose()


async def _analyze(engine: AsyncEngine) -> None:
    """Planner statistics (and, on PostgreSQL, the visibility map) for the new rows."""
    postgres = engine.dialect.name == "postgresql"
    options = {"isolation_level": "AUTOCOMMIT"} if postgres else {}  # VACUUM: no transaction
    async with engine.connect() as conn:
        conn = await conn.execution_options(**options)
        await conn.execute(text("VACUUM ANALYZE" if postgres else "ANALYZE"))


def main(argv: list[str] | None = None) -> int:
    """Seed the database of ``DATABASE_URL`` and print the admin's bearer token."""
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    seeded = asyncio.run(seed(settings.database_url, args.users))
    print(seeded.token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
