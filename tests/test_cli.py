"""Operator commands: create-user, create-token (only the token on stdout), unban.

The commands run their own event loop (``asyncio.run``), so they are invoked in a
worker thread, on an app of their own beside the one serving the checks.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from quart import Quart

from quart_api.app import create_app
from quart_api.models import User
from quart_api.settings import RateSpec
from quart_api.testing import free_port
from tests.api.conftest import PASSWORD, make_app, service_settings

ROOT = Path(__file__).resolve().parent.parent
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
ATTACKER = "203.0.113.7"


async def cli(tmp_path: Path, *args: str, **settings: Any) -> Result:
    """Run one command on a fresh app over the test database."""
    app = create_app(service_settings(tmp_path, **settings))
    runner = app.test_cli_runner()
    return await asyncio.to_thread(runner.invoke, args=list(args))


async def user_named(app: Quart, username: str) -> User | None:
    async with app.extensions["database"].sessionmaker() as session:
        return await User.by_username(session, username)


@pytest.fixture
async def web(tmp_path: Path) -> Quart:
    """The app the checks go through (it also creates the tables)."""
    return await make_app(tmp_path)


async def test_create_user_makes_an_account_that_can_log_in(web: Quart, tmp_path: Path) -> None:
    result = await cli(tmp_path, "create-user", "alice", "--password", PASSWORD)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "alice" in result.stderr
    alice = await user_named(web, "alice")
    assert alice is not None
    assert alice.is_admin is False
    login = await web.test_client().post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert login.status_code == 200


async def test_create_user_admin_flag_makes_an_admin(web: Quart, tmp_path: Path) -> None:
    args = ("create-user", "root", "--password", PASSWORD, "--admin", "--email", "r@x.org")
    assert (await cli(tmp_path, *args)).exit_code == 0
    root = await user_named(web, "root")
    assert root is not None
    assert (root.is_admin, root.email) == (True, "r@x.org")


async def test_create_user_refuses_a_taken_username_in_any_case(web: Quart, tmp_path: Path) -> None:
    await cli(tmp_path, "create-user", "alice", "--password", PASSWORD)
    result = await cli(tmp_path, "create-user", "ALICE", "--password", PASSWORD)
    assert result.exit_code != 0
    assert "already taken" in result.stderr


async def test_create_user_names_invalid_fields_without_echoing_the_password(
    web: Quart, tmp_path: Path
) -> None:
    result = await cli(tmp_path, "create-user", "a!", "--password", "short")
    assert result.exit_code != 0
    assert "username" in result.stderr
    assert "password" in result.stderr
    assert "short" not in result.output
    assert await user_named(web, "a!") is None


async def test_create_token_prints_only_a_working_token(web: Quart, tmp_path: Path) -> None:
    await cli(tmp_path, "create-user", "alice", "--password", PASSWORD)
    result = await cli(tmp_path, "create-token", "alice", "--scopes", "users:read")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert TOKEN.fullmatch(token)
    assert result.stdout == f"{token}\n"
    client = web.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/users/current", headers=auth)).status_code == 200
    refused = await client.patch("/api/v1/users/current", json={"full_name": "A"}, headers=auth)
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create-token", "nobody", "--scopes", "users:read"), "no user named 'nobody'"),
        (("create-token", "alice", "--scopes", "users:delete"), "users:read"),
        (("create-token", "alice", "--scopes", ","), "known"),
    ],
)
async def test_create_token_errors_say_what_is_wrong(
    web: Quart, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    await cli(tmp_path, "create-user", "alice", "--password", PASSWORD)
    result = await cli(tmp_path, *args)
    assert result.exit_code != 0
    assert result.stdout == ""
    assert message in result.stderr


async def test_create_token_from_the_real_command_line_prints_only_the_token_and_no_warning(
    web: Quart, tmp_path: Path
) -> None:
    """A command signs nothing: no SECRET_KEY warning (that is for serving)."""
    await cli(tmp_path, "create-user", "alice", "--password", PASSWORD)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MEMCACHED_SERVERS")},
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'test.db'}",
    }
    command = [sys.executable, "-m", "quart", "--app", "quart_api.app:create_app"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, "create-token", "alice", "--scopes", "users:read,users:write"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert TOKEN.fullmatch(done.stdout.rstrip("\n")), done.stdout
    assert "SECRET_KEY" not in done.stderr
    assert done.stderr == ""


async def test_unban_without_redis_says_it_cannot_reach_the_counters(
    web: Quart, tmp_path: Path
) -> None:
    result = await cli(tmp_path, "unban", ATTACKER)
    assert result.exit_code != 0
    assert "REDIS_URL is not set" in result.stderr


async def test_unban_with_redis_lifts_a_real_ban(tmp_path: Path, redis_url: str) -> None:
    app = await make_app(tmp_path, redis_url=redis_url, protect_limit=RateSpec(2, 3600))
    attacker = {"client": (ATTACKER, 40000)}
    async with app.test_app():
        client = app.test_client()
        await client.post("/api/v1/users", json={"username": "alice", "password": PASSWORD})
        login = await client.post(
            "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
        )
        assert login.status_code == 200
        share = await client.post("/api/v1/users/current/share")
        link = "/api/v1/share/" + (await share.get_json())["data"]["token"]
        for guess in ("a", "b"):
            await client.get(f"/api/v1/share/{guess}", scope_base=attacker)
        assert (await client.get(link, scope_base=attacker)).status_code == 404  # banned
        result = await cli(tmp_path, "unban", ATTACKER, redis_url=redis_url)
        assert result.exit_code == 0, result.output
        assert "cleared" in result.stderr
        assert (await client.get(link, scope_base=attacker)).status_code == 200


@pytest.mark.parametrize("pattern", ["*", "203.0.113.*", "u:alice"])
async def test_unban_refuses_a_pattern_and_deletes_nothing(
    tmp_path: Path, redis_url: str, pattern: str
) -> None:
    import redis

    app = await make_app(tmp_path, redis_url=redis_url)
    async with app.test_app():
        for address in (ATTACKER, "198.51.100.1"):  # failure counters of two clients
            await app.test_client().get("/api/v1/share/guess", scope_base={"client": (address, 1)})
    with redis.Redis.from_url(redis_url) as server:
        # Failure counters live for PROTECT_LIMIT's hour (rate counters expire in ms).
        keys_before = sorted(server.scan_iter(match="*:f:*"))
        result = await cli(tmp_path, "unban", pattern, redis_url=redis_url)
        keys_after = sorted(server.scan_iter(match="*:f:*"))
    assert result.exit_code != 0
    assert "not an IP address" in result.stderr
    assert len(keys_before) == 2
    assert keys_after == keys_before


async def test_create_user_asks_for_the_password_hidden_and_twice(
    web: Quart, tmp_path: Path
) -> None:
    """Left out of the command line, the password stays out of the shell's history."""
    app = create_app(service_settings(tmp_path))
    runner = app.test_cli_runner()
    result = await asyncio.to_thread(
        runner.invoke, args=["create-user", "alice"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Password:" in result.output
    assert "Repeat for confirmation:" in result.output
    assert PASSWORD not in result.output
    login = await web.test_client().post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert login.status_code == 200


async def test_create_user_refuses_two_different_passwords(web: Quart, tmp_path: Path) -> None:
    app = create_app(service_settings(tmp_path))
    runner = app.test_cli_runner()
    result = await asyncio.to_thread(
        runner.invoke, args=["create-user", "alice"], input=f"{PASSWORD}\nsomething else\n"
    )
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert await user_named(web, "alice") is None


def run_command(cwd: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``quart --app quart_api.app:create_app ARGS`` in ``cwd``, with only ``settings`` set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "MEMCACHED_SERVERS", "APP_ENV", "SECRET_KEY")
    }
    env.update(settings, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "quart", "--app", "quart_api.app:create_app", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_a_command_run_elsewhere_names_the_missing_database_and_creates_none(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_command(elsewhere, "create-token", "alice", "--scopes", "users:read")
    assert done.returncode != 0
    assert done.stdout == ""
    assert "DATABASE_URL='sqlite+aiosqlite:///quart_api.db'" in done.stderr
    assert str(elsewhere / "quart_api.db") in done.stderr
    assert "alembic upgrade head" in done.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_command_on_a_database_never_migrated_says_so(tmp_path: Path) -> None:
    database = tmp_path / "empty.db"
    sqlite3.connect(database).close()
    done = run_command(
        tmp_path, "create-user", "alice", "--password", PASSWORD,
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
    )  # fmt: skip
    assert done.returncode != 0
    assert "is not migrated" in done.stderr
    assert "DATABASE_URL=" in done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr


def test_a_refused_database_connection_is_one_line_naming_database_url(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://app:s3cret@127.0.0.1:{free_port()}/app"
    args = ("create-token", "alice", "--scopes", "users:read")
    done = run_command(tmp_path, *args, DATABASE_URL=url)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "DATABASE_URL='postgresql+asyncpg://***@127.0.0.1" in done.stderr
    assert "ConnectionRefusedError" in done.stderr
    assert "s3cret" not in done.stderr


def test_a_command_with_an_invalid_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    done = run_command(tmp_path, "unban", ATTACKER, API_RATE_LIMIT="lots")
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "API_RATE_LIMIT='lots'" in done.stderr
