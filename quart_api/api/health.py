"""Liveness and readiness probes for load balancers.

``/readyz`` answers 503 only when the database is down or not migrated (every
request would fail): the guards fail open, so a dead Redis or memcached degrades
the service but must not pull every instance out of the load balancer at once.
Stores kept in process memory (``REDIS_URL``/``MEMCACHED_SERVERS`` unset) report
``"memory"``. Concurrent probes of one worker share one check.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from quart import Blueprint, Quart, current_app
from quart_schema import document_response
from sqlalchemy.exc import SQLAlchemyError

from quart_api.api.schemas import HealthSchema, ReadySchema
from quart_api.db import Database, DatabaseUnavailable, Migrations, describe_error
from quart_api.guards import Guards

__all__ = ["blueprint"]

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)

#: ``app.extensions`` key of the readiness check in progress, if any.
_CHECK_IN_FLIGHT = "readiness_check"


@blueprint.get("/healthz")
@document_response(HealthSchema)
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@blueprint.get("/readyz")
@document_response(ReadySchema, 200)
@document_response(ReadySchema, 503)
async def readyz() -> tuple[dict[str, Any], int]:
    """Each backend's state; 503 only when the database cannot serve requests.

    ``database`` is ``"ok"``, ``"down"``, or ``"not migrated"`` until its schema is
    at the head of the Alembic scripts (one query: the ``alembic_version`` row).
    Probes that arrive while a check runs share its answer: the route is open to
    anyone, and a flood of probes (against a stalled database above all, where each
    would wait out ``DATABASE_TIMEOUT`` on a pooled connection) costs one check at a
    time per worker, never the pool that requests need.
    """
    extensions = current_app.extensions
    check: asyncio.Task[dict[str, str]] | None = extensions.get(_CHECK_IN_FLIGHT)
    if check is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        check = asyncio.create_task(
            _checks(
                extensions["database"], extensions["migrations"], extensions["guards"].guards, app
            )
        )
        extensions[_CHECK_IN_FLIGHT] = check
        check.add_done_callback(lambda _: extensions.pop(_CHECK_IN_FLIGHT, None))
    # Shielded: a probe that hangs up does not cancel the check the others wait for.
    checks = await asyncio.shield(check)
    healthy = all(v in ("ok", "memory") for v in checks.values())
    status = "ok" if healthy else "degraded"
    return {"status": status, "checks": dict(checks)}, (200 if checks["database"] == "ok" else 503)


async def _checks(
    database: Database, migrations: Migrations | None, guards: Guards, app: Quart
) -> dict[str, str]:
    """The state of the database and of each store, checked at once."""
    database_state, stores = await asyncio.gather(
        _database_state(database, migrations), guards.health(app)
    )
    return {"database": database_state, **stores}


async def _database_state(database: Database, migrations: Migrations | None) -> str:
    try:
        revisions = await database.schema_revisions()
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as error:
        log.warning("readiness: database down: %s", describe_error(error))
        return "down"
    if migrations is not None and not migrations.is_current(revisions):
        log.warning(
            "readiness: database not migrated (at %s, scripts at %s): run 'alembic upgrade head'",
            ", ".join(sorted(revisions)) or "no revision",
            ", ".join(sorted(migrations.heads)),
        )
        return "not migrated"
    return "ok"
