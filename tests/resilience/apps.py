"""The apps the resilience tests serve with a real hypercorn.

Targets for hypercorn: ``tests.resilience.apps:guarded_app()`` and
``tests.resilience.apps:service_app()``. Both read their settings from the
environment through :class:`~quart_api.settings.Settings`, as the service does, so
a test configures a server the way an operator would (``REDIS_URL``,
``TRUSTED_PROXY_COUNT``, ``API_RATE_LIMIT``, ``PROTECT_LIMIT``...).

Each response names the worker process that served it (``X-Worker-Pid``), so a
test can tell that its requests really spread over several processes; views set
``X-View``, which a guard's refusal (429, block) never carries, so a test can count
how often a view ran without sharing state between processes.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from quart import Quart, Response, request
from sqlalchemy import text

from quart_api.guards import Guards, protected, rate_limited
from quart_api.settings import Settings

__all__ = [
    "PID_HEADER",
    "SLOW_SECONDS",
    "USER_HEADER",
    "VIEW_HEADER",
    "guarded_app",
    "service_app",
]

USER_HEADER = "X-User"
VIEW_HEADER = "X-View"
PID_HEADER = "X-Worker-Pid"
#: How long ``GET /slow`` of the service holds its request (and a database connection).
SLOW_SECONDS = 0.5


def _tag_worker(app: Quart) -> None:
    @app.after_request
    async def worker_pid(response: Response) -> Response:
        response.headers[PID_HEADER] = str(os.getpid())
        return response


def guarded_app() -> Quart:
    """A small app of the library's users: no database, users from ``X-User``.

    - ``GET /limited``: ``@rate_limited`` per IP and per user, ``API_RATE_LIMIT``.
    - ``GET /guess/<name>``: ``@protected``, ``PROTECT_LIMIT`` failures (404) per IP;
      ``/guess/ok`` answers 200, any other name 404.
    """
    settings = Settings.from_env()
    app = Quart("resilience_guarded")
    app.config.update(settings.guards_config())
    guards = Guards(app)
    _tag_worker(app)

    @guards.user_loader
    def user_from_header() -> str | None:
        return request.headers.get(USER_HEADER) or None

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/limited")
    @rate_limited(config="API_RATE_LIMIT")
    async def limited() -> tuple[dict[str, Any], int, dict[str, str]]:
        return {"ok": True}, 200, {VIEW_HEADER: "1"}

    @app.get("/guess/<name>")
    @protected(config="PROTECT_LIMIT")
    async def guess(name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        status = 200 if name == "ok" else 404
        return {"name": name, "found": status == 200}, status, {VIEW_HEADER: "1"}

    return app


def service_app() -> Quart:
    """The reference service (``create_app()``) plus two routes for shutdown tests.

    - ``GET /slow``: rate limited like every API route, holds a pooled database
      connection for ``SLOW_SECONDS`` (``pg_sleep`` on PostgreSQL), so a shutdown
      during it has open pools and store clients to close.
    - ``GET /inflight``: unguarded; how many ``/slow`` requests this worker is
      serving now, so a test sends SIGTERM only once they have all arrived.
    """
    from quart_api.api.common import api_view
    from quart_api.app import create_app
    from quart_api.db import get_database, get_session

    app = create_app()
    _tag_worker(app)
    inflight = {"slow": 0}

    @app.get("/slow")
    @rate_limited(config="API_RATE_LIMIT")
    @api_view
    async def slow() -> dict[str, Any]:
        inflight["slow"] += 1
        try:
            if get_database().is_sqlite:
                await asyncio.sleep(SLOW_SECONDS)
            else:
                await get_session().execute(text("SELECT pg_sleep(:s)"), {"s": SLOW_SECONDS})
            return {"slept": SLOW_SECONDS}
        finally:
            inflight["slow"] -= 1

    @app.get("/inflight")
    async def inflight_count() -> dict[str, int]:
        return dict(inflight)

    return app
