"""Probes: /healthz is liveness; /readyz reports each backend, 503 only without a database."""

from __future__ import annotations

from pathlib import Path

from quart import Quart

from quart_api.app import create_app
from tests.api.conftest import service_settings
from tests.servers import MemcachedServer, RedisServer


async def test_healthz_answers_ok(app: Quart) -> None:
    response = await app.test_client().get("/healthz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}


async def test_readyz_with_embedded_backends_is_ok(app: Quart) -> None:
    response = await app.test_client().get("/readyz")
    assert response.status_code == 200
    body = await response.get_json()
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "memcached": "ok"},
    }


async def test_readyz_is_degraded_not_failed_when_caches_are_down(
    tmp_path: Path, redis_server: RedisServer, memcached_server: MemcachedServer
) -> None:
    app = create_app(
        service_settings(
            tmp_path, redis_url=redis_server.url, memcached_servers=memcached_server.address
        )
    )
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
