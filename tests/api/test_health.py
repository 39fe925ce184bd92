"""Probes: /healthz is liveness; /readyz reports each backend, 503 only when the
database is down or not migrated."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from quart import Quart
from sqlalchemy import event, text

from quart_api.app import create_app
from quart_api.db import Database
from quart_api.testing import MemcachedServer, RedisServer
from tests.api.conftest import PASSWORD, create_tables, service_settings

ROOT = Path(__file__).resolve().parent.parent.parent


async def test_healthz_answers_ok(app: Quart) -> None:
    response = await app.test_client().get("/healthz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}


async def test_readyz_with_embedded_backends_is_ok_and_says_memory(app: Quart) -> None:
    response = await app.test_client().get("/readyz")
    assert response.status_code == 200
    body = await response.get_json()
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "memory", "memcached": "memory"},
    }


async def _alembic(url: str, revision: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    # env.py runs its own event loop (asyncio.run): give it a thread without one.
    await asyncio.to_thread(command.upgrade, config, revision)


async def test_readyz_is_503_not_migrated_on_a_database_never_migrated(tmp_path: Path) -> None:
    app = create_app(service_settings(tmp_path))
    async with app.test_app():
        client = app.test_client()
        response = await client.get("/readyz")
        signup = await client.post(
            "/api/v1/users", json={"username": "alice", "password": PASSWORD}
        )
    assert response.status_code == 503
    assert (await response.get_json())["checks"]["database"] == "not migrated"
    assert signup.status_code == 500  # what the probe keeps away from this instance


async def test_readyz_turns_ok_once_alembic_upgrade_head_has_run(tmp_path: Path) -> None:
    settings = service_settings(tmp_path)
    app = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        await _alembic(settings.database_url, "0001")
        behind = await client.get("/readyz")
        await _alembic(settings.database_url, "head")
        current = await client.get("/readyz")
    assert behind.status_code == 503
    assert (await behind.get_json())["checks"]["database"] == "not migrated"
    assert current.status_code == 200
    assert (await current.get_json())["checks"]["database"] == "ok"


async def test_readyz_accepts_a_schema_migrated_by_a_newer_release(tmp_path: Path) -> None:
    """A rolling deploy migrates before every old instance stops: those stay ready."""
    app = create_app(service_settings(tmp_path))
    await create_tables(app)
    database: Database = app.extensions["database"]
    async with database.engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    async with app.test_app():
        response = await app.test_client().get("/readyz")
    assert response.status_code == 200
    assert (await response.get_json())["checks"]["database"] == "ok"


async def test_readyz_costs_one_query_a_probe(app: Quart) -> None:
    """The heads of the scripts are read at start-up; a probe reads one row."""
    database: Database = app.extensions["database"]
    statements: list[str] = []
    probes = 3

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if not statement.startswith(("BEGIN", "ROLLBACK", "COMMIT")):
            statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(probes):
            assert (await app.test_client().get("/readyz")).status_code == 200
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)
    assert statements == ["SELECT version_num FROM alembic_version"] * probes


async def test_readyz_is_degraded_not_failed_when_caches_are_down(
    tmp_path: Path, redis_server: RedisServer, memcached_server: MemcachedServer
) -> None:
    app = create_app(
        service_settings(
            tmp_path, redis_url=redis_server.url, memcached_servers=memcached_server.address
        )
    )
    await create_tables(app)
    async with app.test_app():
        client = app.test_client()
        assert (await (await client.get("/readyz")).get_json())["status"] == "ok"
        redis_server.stop()
        memcached_server.stop()
        try:
            response = await client.get("/readyz")
        finally:
            redis_server.start()
            memcached_server.start()
    assert response.status_code == 200
    assert await response.get_json() == {
        "status": "degraded",
        "checks": {"database": "ok", "redis": "down", "memcached": "down"},
    }


async def test_readyz_is_503_when_the_database_is_down(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no-such-dir"
    app = create_app(
        service_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{missing_dir}/x.db")
    )
    async with app.test_app():
        response = await app.test_client().get("/readyz")
    assert response.status_code == 503
    body = await response.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "down"
