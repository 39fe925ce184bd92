"""Model tests run on both backends: SQLite (a file, as in production) and PostgreSQL.

`database` is a `Database` with the tables created from the models' metadata;
`session` is one session on it. argon2 runs with cheap parameters here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from quart_api import passwords
from quart_api.db import Database
from quart_api.models import metadata

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(autouse=True, scope="session")
def _cheap_argon2() -> None:
    passwords.configure(time_cost=1, memory_cost=8, parallelism=1)


def database_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A fresh, empty database of `backend` for this test."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> AsyncIterator[Database]:
    db = Database(database_url(request, backend, tmp_path), timeout=10, pool_size=10)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def session(database: Database) -> AsyncIterator[AsyncSession]:
    async with database.sessionmaker() as s:
        yield s
