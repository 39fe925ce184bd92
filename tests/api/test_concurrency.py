"""Served by a real hypercorn on loopback against PostgreSQL, create-or-update races
create exactly one row, also when every caller sets a password at a production-like
argon2 cost (the hashes run outside the transactions and their deadline)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from quart_api.auth import KNOWN_SCOPES
from quart_api.models import ApiToken, User
from quart_api.testing import free_port
from tests.api.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
CALLERS = 50


def _environment(database_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MEMCACHED_SERVERS")}
    env.update(
        DATABASE_URL=database_url,
        APP_ENV="production",
        SECRET_KEY="s" * 48,
        API_RATE_LIMIT="100000/minute",
        DATABASE_POOL_SIZE="20",
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="8",
        ARGON2_PARALLELISM="1",
        LOG_LEVEL="WARNING",
    )
    env.update(settings)
    return env


async def _migrate(env: dict[str, str]) -> None:
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


async def _admin_token(database_url: str) -> str:
    engine = create_async_engine(database_url)
    try:
        async with async_sessionmaker(engine)() as session:
            admin = User().from_dict(username="root", password=PASSWORD)
            admin.is_admin = True
            session.add(admin)
            await session.flush()
            token, secret = ApiToken.issue(admin.id, "race", list(KNOWN_SCOPES))
            session.add(token)
            await session.commit()
    finally:
        await engine.dispose()
    return secret


async def _rows_named(database_url: str, username: str) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            query = select(func.count()).where(func.lower(User.username) == username.lower())
            return (await conn.execute(query)).scalar_one()
    finally:
        await engine.dispose()


@asynccontextmanager
async def _serve(env: dict[str, str], log: Path) -> AsyncIterator[httpx.AsyncClient]:
    """hypercorn serving the app on a free loopback port, and a client of it."""
    port = free_port()
    limits = httpx.Limits(max_connections=CALLERS, max_keepalive_connections=CALLERS)
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}",
             "quart_api.app:create_app()"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
            ) as client:
                await _wait_ready(client, server, log)
                yield client
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)


async def _wait_ready(
    client: httpx.AsyncClient, server: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert server.poll() is None, log.read_text()
        try:
            if (await client.get("/healthz", timeout=1)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"hypercorn did not start: {log.read_text()}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_fifty_concurrent_puts_by_username_create_exactly_one_row(
    pg_database: str, tmp_path: Path
) -> None:
    env = _environment(pg_database)
    await _migrate(env)
    auth = {"Authorization": f"Bearer {await _admin_token(pg_database)}"}
    log = tmp_path / "hypercorn.log"
    async with _serve(env, log) as client:
        responses = await asyncio.gather(
            *(
                client.put(
                    f"/api/v1/users/by-username/{('newbie', 'NewBie')[i % 2]}",
                    json={"full_name": f"Caller {i}"},
                    headers=auth,
                )
                for i in range(CALLERS)
            )
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: CALLERS - 1}, [
        r.text for r in responses if r.status_code >= 300
    ]
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert await _rows_named(pg_database, "newbie") == 1
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
async def test_fifty_concurrent_puts_by_username_with_a_password_are_never_5xx(
    pg_database: str, tmp_path: Path
) -> None:
    """Each caller's password is hashed at the service's default memory cost (64 MiB):
    50 hashes queue for the worker's slots while none holds a connection or a
    transaction, so the database deadline never fires and one row is created."""
    env = _environment(
        pg_database,
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="65536",
        ARGON2_PARALLELISM="2",
        DATABASE_POOL_SIZE="10",  # the default
        PASSWORD_HASH_QUEUE_TIMEOUT="120",  # this machine is shared: never shed here
    )
    await _migrate(env)
    auth = {"Authorization": f"Bearer {await _admin_token(pg_database)}"}
    log = tmp_path / "hypercorn.log"
    async with _serve(env, log) as client:
        responses = await asyncio.gather(
            *(
                client.put(
                    f"/api/v1/users/by-username/{('newbie', 'NewBie')[i % 2]}",
                    json={"password": f"passphrase number {i}"},
                    headers=auth,
                    timeout=180,
                )
                for i in range(CALLERS)
            )
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: CALLERS - 1}, [
        r.text for r in responses if r.status_code >= 300
    ]
    assert await _rows_named(pg_database, "newbie") == 1
    assert "Traceback" not in log.read_text()
