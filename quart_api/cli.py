"""Operator commands: ``quart --app quart_api.app:create_app <command>``.

- ``create-user USERNAME [--password P] [--admin]`` (asks for the password, hidden and
  twice, when ``--password`` is left out, so it stays out of the shell's history)
- ``create-token USERNAME --scopes users:read,users:write [--name N] [--expires-in S]``
  prints only the token on stdout (so ``TOKEN=$(quart ... create-token ...)`` works)
- ``unban IP`` clears bans and rate counters of one address (needs ``REDIS_URL``)

Errors go to stderr with a non-zero exit status and a message saying what to do.
The commands never create the database: a missing SQLite file (a relative
``DATABASE_URL`` run from another directory) or a schema never migrated is named,
with ``DATABASE_URL``, instead of leaving an empty file behind.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from quart import Quart
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from quart_api.auth import KNOWN_SCOPES
from quart_api.db import Database, DatabaseUnavailable, describe_error, is_missing_table
from quart_api.guards import Guards, StoreError
from quart_api.guards.errors import redact
from quart_api.models import ApiToken, User, ValidationError

__all__ = ["register_cli"]

T = TypeVar("T")


def _run(app: Quart, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` in an app context on a fresh loop, disposing the engine after."""
    database: Database = app.extensions["database"]
    setting = f"DATABASE_URL={redact(database.url.render_as_string(hide_password=False))!r}"
    sqlite_file = _sqlite_file(database)
    if sqlite_file is not None and not sqlite_file.exists():
        raise click.ClickException(
            f"no database at {sqlite_file} ({setting}, relative to the current directory "
            f"{os.getcwd()}): run the command where the database is, or set DATABASE_URL; "
            "a new one is made by '.venv/bin/alembic upgrade head'"
        )

    async def main() -> T:
        async with app.app_context():
            try:
                return await work(database)
            except SQLAlchemyError as error:
                if not is_missing_table(error):
                    raise click.ClickException(
                        f"the database of {setting} failed: {describe_error(error)}"
                    ) from None
                raise click.ClickException(
                    f"the database of {setting} is not migrated: run "
                    "'.venv/bin/alembic upgrade head' with the same DATABASE_URL"
                ) from None
            except (DatabaseUnavailable, OSError) as error:
                raise click.ClickException(
                    f"the database of {setting} is unavailable: {describe_error(error)}"
                ) from None
            finally:
                await database.dispose()

    return asyncio.run(main())


def _sqlite_file(database: Database) -> Path | None:
    """The file a SQLite ``DATABASE_URL`` names (None for PostgreSQL or ``:memory:``)."""
    name = database.url.database
    if not database.is_sqlite or name in (None, "", ":memory:") or name.startswith("file:"):
        return None
    return Path(name).resolve()


def _scopes(value: str) -> list[str]:
    scopes = sorted({s.strip() for s in value.split(",") if s.strip()})
    unknown = sorted(set(scopes) - set(KNOWN_SCOPES))
    if not scopes or unknown:
        raise click.BadParameter(
            f"unknown or no scopes {unknown or value!r}; known: {', '.join(KNOWN_SCOPES)}"
        )
    return scopes


def register_cli(app: Quart) -> None:
    """Add the commands to ``app.cli``."""

    @app.cli.command("create-user")
    @click.argument("username")
    @click.option(
        "--password",
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help="The new user's password (8+ characters); asked for, hidden, when left out.",
    )
    @click.option("--admin", is_flag=True, help="Make the user an admin.")
    @click.option("--email", default=None)
    def create_user(username: str, password: str, admin: bool, email: str | None) -> None:
        """Create a user (optionally an admin)."""

        async def work(database: Database) -> User:
            fields: dict[str, Any] = {"username": username, "password": password}
            if email is not None:
                fields["email"] = email
            async with database.sessionmaker() as session, database.deadline():
                if await User.by_username(session, username) is not None:
                    raise click.ClickException(f"the username {username!r} is already taken")
                user = User()
                try:
                    await user.afrom_dict(**fields)
                except ValidationError as error:
                    details = "; ".join(f"{e['field']}: {e['message']}" for e in error.errors)
                    raise click.ClickException(details) from None
                user.is_admin = admin
                session.add(user)
                try:
                    await session.commit()
                except IntegrityError:
                    raise click.ClickException(
                        f"the username {username!r} is already taken"
                    ) from None
                return user

        user = _run(app, work)
        click.echo(f"created {'admin ' if admin else ''}user {user.username} ({user.id})", err=True)

    @app.cli.command("create-token")
    @click.argument("username")
    @click.option("--scopes", required=True, help="Comma-separated, e.g. users:read,users:write")
    @click.option("--name", default="cli", show_default=True)
    @click.option("--expires-in", type=click.IntRange(min=1), default=None, help="Seconds.")
    def create_token(username: str, scopes: str, name: str, expires_in: int | None) -> None:
        """Create an API token for USERNAME and print it (only the token, on stdout)."""
        wanted = _scopes(scopes)

        async def work(database: Database) -> str:
            async with database.sessionmaker() as session, database.deadline():
                user = await User.by_username(session, username)
                if user is None:
                    raise click.ClickException(f"no user named {username!r}")
                lifetime = timedelta(seconds=expires_in) if expires_in else None
                token, secret = ApiToken.issue(user.id, name, wanted, lifetime)
                session.add(token)
                await session.commit()
                return secret

        click.echo(_run(app, work))

    @app.cli.command("unban")
    @click.argument("ip")
    def unban(ip: str) -> None:
        """Clear bans and rate counters of IP (in the shared Redis).

        IP is an address in any spelling (``[2001:db8::1]:443`` too), never a pattern.
        """
        if not app.config.get("REDIS_URL"):
            raise click.ClickException(
                "REDIS_URL is not set: the guards' counters live in each server "
                "process's memory, which this command cannot reach; restart the server "
                "to clear them, or configure REDIS_URL"
            )
        guards: Guards = app.extensions["guards"].guards

        async def work(_database: Database) -> int:
            try:
                return await guards.unban(ip, app)
            except ValueError as error:
                raise click.BadParameter(str(error), param_hint="IP") from None
            except StoreError as error:
                raise click.ClickException(f"Redis is unavailable: {error}") from None
            finally:
                await app.extensions["guards"].counters.close()

        removed = _run(app, work)
        click.echo(f"cleared {removed} key(s) for {ip}", err=True)
