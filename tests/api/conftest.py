"""Fixtures for the service: an app on a fresh SQLite file, memory guards, cheap hashing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart

from quart_api.app import create_app
from quart_api.db import Base, Database
from quart_api.settings import Settings


def service_settings(tmp_path: Path, **changes: object) -> Settings:
    """Settings a test app runs with: its own database file, cheap argon2."""
    base = Settings.from_env({}).replace(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'test.db'}",
        argon2_time_cost=1,
        argon2_memory_cost=8,
        argon2_parallelism=1,
        log_level="WARNING",
    )
    return base.replace(**changes) if changes else base


async def create_tables(app: Quart) -> None:
    database: Database = app.extensions["database"]
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Quart]:
    app = create_app(service_settings(tmp_path))
    await create_tables(app)
    async with app.test_app():
        yield app
