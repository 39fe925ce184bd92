"""Alembic environment (async): migrates the database the service is configured for.

URL precedence: a `sqlalchemy.url` set on the Config by a caller of Alembic's command
API (tests) > the `DATABASE_URL` environment variable > the embedded SQLite default.
Set `config.attributes["configure_logger"] = False` when calling from a process that
has its own logging (tests), so alembic.ini's logging setup does not replace it.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from quart_api.db import describe_error
from quart_api.guards.errors import redact
from quart_api.models import metadata
from quart_api.settings import Settings, SettingsError

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def database_url() -> str:
    """The URL to migrate (see the module docstring for the precedence)."""
    explicit = config.get_main_option("sqlalchemy.url")
    if explicit:
        return explicit
    # The service's own settings reader: the same DATABASE_URL rules and errors.
    try:
        return Settings.from_env().database_url
    except SettingsError as error:
        raise SystemExit(f"alembic: {error}") from None


def _options(dialect_name: str) -> dict[str, object]:
    return {
        "target_metadata": target_metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
    }


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) without connecting."""
    url = database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.split(":", 1)[0].split("+", 1)[0]),  # type: ignore[arg-type]
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    # Database() is not used here on purpose: one connection, no pool, and no
    # SQLite BEGIN IMMEDIATE hooks (Alembic manages its own transaction).
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Migrate; a database that cannot be reached ends in one line naming DATABASE_URL."""
    url = database_url()
    try:
        asyncio.run(run_async_migrations())
    except (OSError, SQLAlchemyError) as error:
        raise SystemExit(
            f"alembic: cannot migrate the database of DATABASE_URL={redact(url)!r}: "
            f"{describe_error(error)}"
        ) from None


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
