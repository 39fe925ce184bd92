"""The service under a real hypercorn on PostgreSQL, for the browser and example tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from quart_api.models import ApiToken, User
from quart_api.testing import free_port
from tests.api.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Served:
    """A running service: its URL and a developer's token that may register apps."""

    url: str
    developer_auth: dict[str, str]


def _seed(database_url: str) -> str:
    """alice (who authorizes apps) and developer (who registers them); the latter's token."""

    async def seed() -> str:
        engine = create_async_engine(database_url)
        try:
            async with async_sessionmaker(engine)() as session:
                alice = User().from_dict(username="alice", password=PASSWORD)
                developer = User().from_dict(username="developer", password=PASSWORD)
                session.add_all([alice, developer])
                await session.flush()
                token, secret = ApiToken.issue(developer.id, "apps", ["tokens:write"])
                session.add(token)
                await session.commit()
                return secret
        finally:
            await engine.dispose()

    return asyncio.run(seed())


@contextmanager
def serve(database_url: str, log: Path, **settings: str) -> Iterator[Served]:
    """Migrate ``database_url``, seed two users, and serve the app on a free port,
    with ``settings`` (environment variables) on top of the defaults."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MEMCACHED_SERVERS")}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY="k" * 48,
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="8",
        ARGON2_PARALLELISM="1",
        LOG_LEVEL="WARNING",
    )
    env.update(settings)
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    secret = _seed(database_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}",
             "quart_api.app:create_app()"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"hypercorn did not start: {log.read_text()}"
                time.sleep(0.1)
            yield Served(url, {"Authorization": f"Bearer {secret}"})
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)


def register_app(served: Served, redirect_uri: str, method: str = "none") -> dict[str, str]:
    """Register an app as the developer; its registration (secret included)."""
    response = httpx.post(
        f"{served.url}/api/v1/oauth/clients",
        json={"client_name": "Photo Printer", "redirect_uris": [redirect_uri],
              "token_endpoint_auth_method": method, "scope": "users:read users:write"},
        headers=served.developer_auth,
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    data: dict[str, str] = response.json()["data"]
    return data
