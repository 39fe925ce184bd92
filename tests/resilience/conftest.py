"""Real hypercorn processes for the resilience tests, and the service they share.

`serve()` starts one hypercorn (through `quart_api.testing.HypercornApp`, the launcher
`make bench` uses too: its own process group, SIGTERM then SIGKILL on the way out) and always
stops it in a `finally`. `service` is the reference service on the session's real
PostgreSQL, Redis and memcached, with two users and their bearer tokens, shared by
the bad-input and security tests of this package (started once: a hypercorn takes
a second or two to import the app).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from quart_api import passwords
from quart_api.auth import KNOWN_SCOPES
from quart_api.models import ApiToken, User
from quart_api.testing import (
    HypercornApp,
    MemcachedServer,
    PostgresServer,
    RedisServer,
    free_port,
)
from tests.api.conftest import create_schema
from tests.resilience.apps import PID_HEADER

#: The repository root: hypercorn imports the test apps from there.
ROOT = Path(__file__).resolve().parents[2]
GUARDED = "tests.resilience.apps:guarded_app()"
SERVICE = "tests.resilience.apps:service_app()"
READY_SECONDS = 30.0
PASSWORD = "resilience-password"


def server_env(**settings: str) -> dict[str, str]:
    """Our environment for a server: no PG*/PROMETHEUS* leaking in, cheap argon2, quiet logs.

    ``settings`` are the service's variables (``REDIS_URL=...``); they win.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PROMETHEUS"))}
    for name in ("REDIS_URL", "MEMCACHED_SERVERS", "DATABASE_URL", "TRUSTED_PROXY_COUNT"):
        env.pop(name, None)  # only what a test asks for
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
        APP_ENV="development",
        SECRET_KEY=secrets.token_urlsafe(48),  # one key for every worker
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="8",
        ARGON2_PARALLELISM="1",
    )
    env.update(settings)
    return env


@contextlib.contextmanager
def serve(
    target: str,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    workers: int = 1,
    name: str = "app",
) -> Iterator[HypercornApp]:
    """``target`` under hypercorn on a free loopback port, answering ``/healthz``; stopped after.

    With several workers, returns only once each of them has answered (seen by its
    ``X-Worker-Pid``), so a test's requests can spread over all of them.
    """
    app = HypercornApp(
        name=name,
        target=target,
        port=free_port(),
        env=env,
        log_path=log_dir / f"{name}-{uuid.uuid4().hex[:8]}.log",
        workers=workers,
        ready_path="/healthz",
        cwd=ROOT,
    )
    try:
        app.start()
        deadline = time.monotonic() + READY_SECONDS
        app.wait_ready(deadline)
        if workers > 1:
            wait_for_workers(app, workers, deadline)
        yield app
    finally:
        app.stop()


def wait_for_workers(app: HypercornApp, workers: int, deadline: float) -> set[str]:
    """Poll ``/healthz`` on new connections until ``workers`` distinct PIDs answered."""
    seen: set[str] = set()
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"only workers {sorted(seen)} of {workers} answered; log:\n{app.log_tail()}"
            )
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(app.base_url + "/healthz", timeout=2)
            seen.add(response.headers[PID_HEADER])
        time.sleep(0.02)
    return seen


def log_text(app: HypercornApp) -> str:
    """Everything the server wrote (stdout and stderr share the log file)."""
    return app.log_path.read_text(errors="replace")


@dataclass(frozen=True)
class Service:
    """The running service and who may call it."""

    app: HypercornApp
    database_url: str
    tokens: dict[str, str]  # username -> bearer secret
    user_ids: dict[str, uuid.UUID]

    @property
    def url(self) -> str:
        return self.app.base_url

    def bearer(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}


async def seed_service_database(
    database_url: str, usernames: list[str]
) -> tuple[dict[str, str], dict[str, uuid.UUID]]:
    """Tables (``create_all``), one user per name, and a token with every scope for each.

    Returns the bearer secrets and the user ids, by username.
    """
    passwords.configure(time_cost=1, memory_cost=8, parallelism=1)
    engine = create_async_engine(database_url)
    tokens: dict[str, str] = {}
    user_ids: dict[str, uuid.UUID] = {}
    try:
        async with engine.begin() as connection:
            await connection.run_sync(create_schema)
        async with AsyncSession(engine, expire_on_commit=False) as session:
            for username in usernames:
                user = User().from_dict(
                    username=username, password=PASSWORD, email=f"{username}@example.org"
                )
                session.add(user)
                await session.flush()
                token, secret = ApiToken.issue(user.id, "resilience", list(KNOWN_SCOPES))
                session.add(token)
                tokens[username], user_ids[username] = secret, user.id
            await session.commit()
    finally:
        await engine.dispose()
    return tokens, user_ids


@pytest.fixture(scope="package")
async def service(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    memcached_server: MemcachedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Service]:
    """The service (1 worker) on real PostgreSQL, Redis and memcached, limits out of reach.

    Users ``alice`` and ``bob``, each with a bearer token carrying every scope.
    """
    name = f"resilience_{uuid.uuid4().hex[:12]}"
    database_url = postgres_server.create_database(name)
    try:
        tokens, user_ids = await seed_service_database(database_url, ["alice", "bob"])
        env = server_env(
            DATABASE_URL=database_url,
            REDIS_URL=redis_server.url,
            MEMCACHED_SERVERS=memcached_server.address,
            API_RATE_LIMIT="100000/minute",
            LOGIN_RATE_LIMIT="100000/minute",
            PROTECT_LIMIT="100000/hour",
        )
        with serve(SERVICE, env, tmp_path_factory.mktemp("service"), name="service") as app:
            yield Service(app, database_url, tokens, user_ids)
    finally:
        postgres_server.ensure_running()
        postgres_server.drop_database(name)


def assert_still_serving(url: str) -> None:
    """The server answers a plain request on a new connection: no worker is stuck."""
    response = httpx.get(url + "/healthz", timeout=5)
    assert response.status_code == 200, response.text
