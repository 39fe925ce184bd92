"""Attacks on the parity API (default and blueprint limits, ``@exempt``, ``on_breach``,
rate strings, the safelist and the blocklist), through HTTP on memory and real stores.

Each test names the attack it closes or the way around a guard it proves shut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quart import Blueprint, Quart

from quart_api.guards import Guards
from tests.guards.conftest import Backend, Calls, make_app, serving


async def _statuses(client: Any, path: str, n: int, **options: Any) -> list[int]:
    return [(await client.get(path, **options)).status_code for _ in range(n)]


# -- default limits: views that look like static files -------------------------------


async def test_a_view_named_static_does_not_escape_the_default_limits(backend: Backend) -> None:
    """Only the static-file view itself is left alone, not any view called ``static``."""
    app = Quart(__name__, static_folder=None)  # the "static" endpoint is free to take
    Guards(
        app,
        redis_url=backend.redis_url,
        memcached_servers=backend.memcached_servers,
        default_limits="2/minute",
    )
    calls = Calls()
    shop = Blueprint("shop", __name__)

    @app.get("/export")
    async def static() -> str:
        calls()
        return "the whole table"

    async def export() -> str:
        calls()
        return "the whole table"

    shop.add_url_rule("/export", "static", export)  # endpoint "shop.static"
    app.register_blueprint(shop, url_prefix="/shop")
    async with serving(app) as client:
        app_view = await _statuses(client, "/export", 3)
        blueprint_view = await _statuses(client, "/shop/export", 3)
    assert app_view == [200, 200, 429]
    assert blueprint_view == [200, 200, 429]
    assert calls.count == 4


async def test_static_files_of_a_blueprint_stay_free_of_the_default_limits(
    backend: Backend, tmp_path: Path
) -> None:
    (tmp_path / "app.css").write_text("body {}")
    app, _ = make_app(backend, default_limits="1/minute")
    assets = Blueprint("assets", __name__, static_folder=str(tmp_path), static_url_path="/s")
    app.register_blueprint(assets, url_prefix="/assets")
    async with serving(app) as client:
        statuses = await _statuses(client, "/assets/s/app.css", 3)
    assert statuses == [200, 200, 200]
