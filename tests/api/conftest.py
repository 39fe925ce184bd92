"""Fixtures for the service: an app on a fresh SQLite file, memory guards, cheap hashing.

`make_user` and `bearer` create accounts and tokens straight in the database, so
tests of one route do not depend on the others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from quart import Quart
from quart.typing import TestClientProtocol
from sqlalchemy import Connection

from quart_api.app import create_app
from quart_api.db import MIGRATIONS_DIRECTORY, Base, Database
from quart_api.models import ApiToken, User
from quart_api.settings import RateSpec, Settings

PASSWORD = "correct horse battery"


def service_settings(tmp_path: Path, **changes: Any) -> Settings:
    """Settings a test app runs with: its own database file, cheap argon2, roomy limits."""
    base = Settings.from_env({}).replace(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'test.db'}",
        argon2_time_cost=1,
        argon2_memory_cost=8,
        argon2_parallelism=1,
        api_rate_limit=RateSpec(10_000, 60),
        login_rate_limit=RateSpec(10_000, 60),
        protect_limit=RateSpec(10_000, 3600),
        signup_rate_limit=RateSpec(10_000, 3600),
        # Tests change accounts straight in the database; the principal cache has
        # its own tests (test_auth_cache.py).
        auth_cache_seconds=0.0,
        # Frozen start-up objects are never collected: across hundreds of test apps in
        # one process, that would keep every finished app alive (tests/test_app.py).
        gc_freeze=False,
        log_level="WARNING",
    )
    return base.replace(**changes) if changes else base


def create_schema(connection: Connection) -> None:
    """The tables, stamped at the Alembic head, as ``alembic upgrade head`` leaves them
    (``create_all`` is faster; tests/test_migrations.py proves the two schemas agree)."""
    Base.metadata.create_all(connection)
    MigrationContext.configure(connection).stamp(ScriptDirectory(str(MIGRATIONS_DIRECTORY)), "head")


async def create_tables(app: Quart) -> None:
    database: Database = app.extensions["database"]
    async with database.engine.begin() as connection:
        await connection.run_sync(create_schema)


async def make_app(tmp_path: Path, **changes: Any) -> Quart:
    app = create_app(service_settings(tmp_path, **changes))
    await create_tables(app)
    return app


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Quart]:
    app = await make_app(tmp_path)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> TestClientProtocol:
    return app.test_client()


MakeUser = Callable[..., Awaitable[User]]
Bearer = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def make_user(app: Quart) -> MakeUser:
    """Create a user directly in the database (password: PASSWORD)."""
    return user_maker(app)


def user_maker(app: Quart) -> MakeUser:
    """`make_user` for an app a test built itself."""

    async def make(username: str, *, admin: bool = False, email: str | None = None) -> User:
        database: Database = app.extensions["database"]
        async with database.sessionmaker() as session:
            user = User()
            user.from_dict(
                username=username,
                password=PASSWORD,
                email=email or f"{username.lower()}@example.org",
            )
            user.is_admin = admin
            session.add(user)
            await session.commit()
            return user

    return make


@pytest.fixture
def bearer(app: Quart) -> Bearer:
    """An Authorization header with a fresh token of `user` carrying `scopes`."""
    return bearer_maker(app)


def bearer_maker(app: Quart) -> Bearer:
    """`bearer` for an app a test built itself."""

    async def make(
        user: User, scopes: tuple[str, ...] = ("users:read", "users:write", "tokens:write")
    ) -> dict[str, str]:
        database: Database = app.extensions["database"]
        async with database.sessionmaker() as session:
            token, secret = ApiToken.issue(user.id, "test", list(scopes))
            session.add(token)
            await session.commit()
        return {"Authorization": f"Bearer {secret}"}

    return make
