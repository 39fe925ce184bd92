"""SIGTERM during load: in-flight requests finish, nothing new is served, the exit is clean.

This is what a deploy does to every instance (systemd, Kubernetes and docker stop
all send SIGTERM to the server's main process). The service runs under hypercorn
on the session's PostgreSQL, Redis and memcached; eight requests are inside
``GET /slow`` (each holding a pooled database connection in ``pg_sleep``) when the
signal arrives. They must all answer 200; a request on a new connection after them
must not be served; hypercorn must exit 0; and closing must be orderly: no
traceback or unclosed-resource warning from the server, and no client connection
that PostgreSQL saw vanish without its goodbye (a pool that was never closed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest

from quart_api.testing import PostgresServer
from tests.resilience.apps import SLOW_SECONDS
from tests.resilience.conftest import (
    SERVICE,
    log_text,
    seed_service_database,
    serve,
    server_env,
)

pytestmark = pytest.mark.slow

IN_FLIGHT = 8
# What an orderly shutdown never writes (the server runs with ResourceWarnings shown).
BAD_SIGNS = (
    "Traceback",
    "ERROR",
    "ResourceWarning",
    "Unclosed",
    "Task was destroyed",
    "was never awaited",
)


async def _wait_in_flight(client: httpx.AsyncClient, count: int) -> None:
    """Until the worker is inside ``count`` ``/slow`` requests (bounded by the test's own)."""
    for _ in range(200):
        if (await client.get("/inflight")).json()["slow"] >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"fewer than {count} requests reached /slow")


async def test_sigterm_lets_in_flight_requests_finish_and_exits_cleanly(
    pg_database: str,
    postgres_server: PostgresServer,
    redis_url: str,
    memcached_servers: str,
    tmp_path: Path,
) -> None:
    env = server_env(
        DATABASE_URL=pg_database,
        REDIS_URL=redis_url,
        MEMCACHED_SERVERS=memcached_servers,
        API_RATE_LIMIT="100000/minute",
        PYTHONWARNINGS="default::ResourceWarning",
    )
    await seed_service_database(pg_database, [])  # migrated: /readyz reports "ok"
    await _log_vanished_clients(postgres_server, pg_database)
    pg_log_offset = postgres_server.log_path.stat().st_size
    with serve(SERVICE, env, tmp_path, name="graceful") as app:
        assert app.process is not None
        main_pid = app.process.pid
        url = app.base_url
        async with httpx.AsyncClient(base_url=url, timeout=10) as control:
            # Every backend in use before the signal: database pool, Redis, memcached.
            ready = await control.get("/readyz")
            assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "memcached": "ok"}
            assert (await control.get("/slow")).status_code == 200

            async with httpx.AsyncClient(
                base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
            ) as load:
                in_flight = [asyncio.create_task(load.get("/slow")) for _ in range(IN_FLIGHT)]
                await _wait_in_flight(control, IN_FLIGHT)
                os.kill(main_pid, signal.SIGTERM)
                finished = await asyncio.gather(*in_flight, return_exceptions=True)

        assert [getattr(r, "status_code", r) for r in finished] == [200] * IN_FLIGHT
        assert all(r.json() == {"slept": SLOW_SECONDS} for r in finished)  # type: ignore[union-attr]

        # The in-flight requests took SLOW_SECONDS; the worker stopped accepting at once.
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=10)

        try:
            code = app.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hypercorn still runs 15 s after SIGTERM:\n{app.log_tail()}")
        log = log_text(app)

    assert code == 0, log
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", timeout=5)
    for sign in BAD_SIGNS:
        assert sign not in log, f"{sign!r} in the server's output:\n{log}"
    assert "Running on http://" in log
    await _wait_sessions_gone(postgres_server, pg_database)
    pg_log = _read_from(postgres_server.log_path, pg_log_offset)
    assert "unexpected EOF on client connection" not in pg_log, pg_log
    assert "Connection reset by peer" not in pg_log, pg_log


async def _log_vanished_clients(server: PostgresServer, database_url: str) -> None:
    """Make PostgreSQL log a client that leaves without its Terminate message.

    It says "unexpected EOF on client connection" then, but at DEBUG1 when no
    transaction was open (an idle pooled connection): raised for this database only.
    """
    dbname = database_url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(server.dsn(), timeout=5)
    try:
        await connection.execute(f"ALTER DATABASE {dbname} SET log_min_messages = debug1")
    finally:
        await connection.close()


async def _wait_sessions_gone(server: PostgresServer, database_url: str) -> None:
    """Until PostgreSQL has no session left on the test's database (each backend has
    logged how its client left by then)."""
    dbname = database_url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(server.dsn(), timeout=5)
    try:
        for _ in range(200):
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            if await connection.fetchval(query, dbname) == 0:
                return
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
    raise AssertionError(f"sessions on {dbname} outlived the server")


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")
