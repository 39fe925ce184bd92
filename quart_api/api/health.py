"""Liveness and readiness probes for load balancers.

``/readyz`` answers 503 only when the database is down: the guards fail
open, so a dead Redis or memcached degrades the service but must not pull
every instance out of the load balancer at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from quart import Blueprint, current_app
from quart_schema import document_response
from sqlalchemy.exc import SQLAlchemyError

from quart_api.api.schemas import HealthSchema, ReadySchema
from quart_api.db import Database, DatabaseUnavailable
from quart_api.guards import Guards

__all__ = ["blueprint"]

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
@document_response(HealthSchema)
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@blueprint.get("/readyz")
@document_response(ReadySchema, 200)
@document_response(ReadySchema, 503)
async def readyz() -> tuple[dict[str, Any], int]:
    """Each backend's state; 503 only when the database cannot answer."""
    database: Database = current_app.extensions["database"]
    guards: Guards = current_app.extensions["guards"].guards
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    database_ok, stores = await asyncio.gather(_database_ok(database), guards.health(app))
    checks = {"database": "ok" if database_ok else "down", **stores}
    status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
    return {"status": status, "checks": checks}, (200 if database_ok else 503)


async def _database_ok(database: Database) -> bool:
    try:
        await database.ping()
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as error:
        log.warning("readiness: database down: %s", error)
        return False
    return True
