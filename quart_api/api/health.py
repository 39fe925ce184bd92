"""Liveness and readiness probes for load balancers.

``/readyz`` answers 503 only when the database is down: the guards fail
open, so a dead Redis or memcached degrades the service but must not pull
every instance out of the load balancer at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from quart import Blueprint, current_app

from quart_api.db import Database
from quart_api.guards import Guards

__all__ = ["blueprint"]

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@blueprint.get("/readyz")
async def readyz() -> tuple[dict[str, Any], int]:
    """Each backend's state; 503 only when the database cannot answer."""
    database: Database = current_app.extensions["database"]
    guards: Guards = current_app.extensions["guards"].guards
    database_ok, stores = await asyncio.gather(
        _database_ok(database), guards.health(current_app)
    )
    checks = {"database": "ok" if database_ok else "down", **stores}
    status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
    return {"status": status, "checks": checks}, (200 if database_ok else 503)


async def _database_ok(database: Database) -> bool:
    try:
        await database.ping()
    except Exception:  # noqa: BLE001 - any failure means "not ready"; ping logs nothing
        return False
    return True
