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


@pytest.mark.slow
async def test_every_route_on_a_pool_of_one_connection_answers_without_waiting_on_itself(
    pg_database: str, tmp_path: Path
) -> None:
    """The pool is fixed (``DATABASE_POOL_SIZE`` is also its most): a route that held
    its connection while waiting for a second would wait out ``DATABASE_TIMEOUT`` and
    answer 503. On a pool of one, each route runs once, then 50 at once."""
    env = _environment(
        pg_database, DATABASE_POOL_SIZE="1", SIGNUP_RATE_LIMIT="1000/hour", AUTH_CACHE_SECONDS="0"
    )
    await _migrate(env)
    admin = {"Authorization": f"Bearer {await _admin_token(pg_database)}"}
    log = tmp_path / "hypercorn.log"
    async with _serve(env, log) as client:
        signed_up = await client.post(
            "/api/v1/users", json={"username": "tourist", "password": PASSWORD}
        )
        assert signed_up.status_code == 201, signed_up.text
        tourist_id = signed_up.json()["data"]["id"]
        login = await client.post(
            "/api/v1/auth/login", json={"username": "tourist", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        # The session cookie is Secure in production; sent by hand over plain HTTP.
        cookie = {"Cookie": "; ".join(f"{k}={v}" for k, v in login.cookies.items())}
        issued = await client.post(
            "/api/v1/auth/tokens",
            json={"name": "tour", "scopes": ["users:read", "users:write"]},
            headers=cookie,
        )
        assert issued.status_code == 201, issued.text
        tourist = {"Authorization": f"Bearer {issued.json()['data']['token']}"}
        shared = await client.post("/api/v1/users/current/share", headers=tourist, json={})
        assert shared.status_code == 201, shared.text
        share = shared.json()["data"]
        registered = await client.post(
            "/api/v1/oauth/clients",
            json={"client_name": "Tour", "redirect_uris": ["http://127.0.0.1/callback"]},
            headers=admin,
        )
        assert registered.status_code == 201, registered.text
        tour = [
            ("GET", "/readyz", admin, None, 200),
            ("GET", "/api/v1/users", admin, None, 200),
            ("GET", "/api/v1/users/current", tourist, None, 200),
            ("GET", f"/api/v1/users/{tourist_id}", admin, None, 200),
            ("PATCH", f"/api/v1/users/{tourist_id}", admin, {"full_name": "T. Ourist"}, 200),
            ("PUT", "/api/v1/users/by-username/guide", admin, {"password": PASSWORD}, 201),
            ("GET", "/api/v1/auth/tokens", cookie, None, 200),
            ("GET", f"/api/v1/share/{share['token']}", {}, None, 200),
            ("GET", "/api/v1/users/current/share", tourist, None, 200),
            ("DELETE", f"/api/v1/users/current/share/{share['id']}", tourist, None, 204),
            ("GET", "/api/v1/oauth/clients", admin, None, 200),
            ("POST", "/api/v1/auth/logout", cookie, None, 204),
            ("PATCH", f"/api/v1/users/{tourist_id}", admin, {"password": "new secret 1"}, 200),
            ("DELETE", f"/api/v1/users/{tourist_id}", admin, None, 204),
        ]
        for method, path, headers, body, expected in tour:
            response = await client.request(method, path, headers=headers, json=body)
            assert response.status_code == expected, (method, path, response.text)
        burst = await asyncio.gather(
            *(
                client.request(method, path, headers=headers, json=body)
                for method, path, headers, body in [
                    ("GET", "/api/v1/users", admin, None),
                    ("GET", "/api/v1/users/current", admin, None),
                    ("PUT", "/api/v1/users/by-username/guide", admin, {"full_name": "G"}),
                    ("PATCH", "/api/v1/users/current", admin, {"full_name": "Root"}),
                    ("GET", "/api/v1/auth/tokens", admin, None),
                ]
                * (CALLERS // 5)
            )
        )
    assert [r.status_code for r in burst if r.status_code != 200] == [], [
        r.text for r in burst if r.status_code != 200
    ]
    assert "Traceback" not in log.read_text()
