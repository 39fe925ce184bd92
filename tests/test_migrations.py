"""Alembic: the migrations run both ways and agree with the models (no drift)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from quart_api.models import metadata

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "users",
    "api_tokens",
    "share_links",
    "oauth_clients",
    "oauth_grants",
    "oauth_refresh_tokens",
}


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False  # keep pytest's logging as it is
    return config


async def alembic(url: str, verb: str, revision: str) -> None:
    # env.py runs its own event loop (asyncio.run): give it a thread without one.
    await asyncio.to_thread(getattr(command, verb), alembic_config(url), revision)


async def inspect_db(url: str, fn: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {"alembic_version"}


def drift(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    with warnings.catch_warnings():
        # SQLite cannot reflect expression indexes (lower(username)); checked below.
        warnings.filterwarnings("ignore", message=".*expression-based index")
        return list(compare_metadata(context, metadata))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


async def test_upgrade_downgrade_upgrade_on_a_fresh_database(db_url: str) -> None:
    await alembic(db_url, "upgrade", "head")
    assert await inspect_db(db_url, tables) == TABLES
    await alembic(db_url, "downgrade", "base")
    assert await inspect_db(db_url, tables) == set()
    await alembic(db_url, "upgrade", "head")
    assert await inspect_db(db_url, tables) == TABLES


async def test_migrations_and_models_agree(db_url: str) -> None:
    await alembic(db_url, "upgrade", "head")
    assert await inspect_db(db_url, drift) == []


async def test_migrated_schema_keeps_usernames_unique_case_insensitively(db_url: str) -> None:
    await alembic(db_url, "upgrade", "head")
    engine = create_async_engine(db_url)
    insert = text(
        "INSERT INTO users (id, username, is_admin, session_version, created_at, modified_at)"
        " VALUES (:id, :name, false, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(insert, {"id": "0" * 32, "name": "Alice"})
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert, {"id": "1" * 32, "name": "alice"})
    finally:
        await engine.dispose()


def test_alembic_command_reads_database_url(tmp_path: Path) -> None:
    path = tmp_path / "from_env.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{path}"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with closing(sqlite3.connect(path)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert names >= TABLES | {"uq_users_username_lower"}
