"""A minimal Quart app guarded by quart-api's guards: no database, its own users.

Run it (memory stores)::

    hypercorn examples.minimal_app:app

or shared by several workers, with real stores (any ``REDIS_URL`` scheme the guards
take: ``redis://``, ``valkey://``, ``redis+cluster://``, ``redis+sentinel://``)::

    REDIS_URL=redis://127.0.0.1:6379/0 MEMCACHED_SERVERS=127.0.0.1:11211 \\
        hypercorn --workers 2 examples.minimal_app:app

Who the user is comes from an ``X-User`` header, standing in for whatever
authentication an app has: the guards only need a callable that returns a
stable id (or None). This app reads its own settings from the environment; the
guards themselves read them from ``app.config``.
"""

from __future__ import annotations

import logging
import os

from quart import Blueprint, Quart, abort, request

from quart_api.guards import Breach, Guards, cached, exempt, protected, rate_limited

log = logging.getLogger("examples.minimal_app")

app = Quart(__name__)
app.config.update(
    REDIS_URL=os.environ.get("REDIS_URL") or None,  # unset: in-process memory stores
    MEMCACHED_SERVERS=os.environ.get("MEMCACHED_SERVERS") or None,
    # Every route without a limit of its own (and not @exempt) gets this one.
    GUARDS_DEFAULT_LIMITS=os.environ.get("GUARDS_DEFAULT_LIMITS", "300/minute"),
    GUARDS_BLOCKLIST=os.environ.get("GUARDS_BLOCKLIST") or None,  # "203.0.113.0/24, ..."
    GUARDS_SAFELIST=os.environ.get("GUARDS_SAFELIST") or None,
)


def report_breach(breach: Breach) -> None:
    """Every 429 the guards answer: which budget ran out, for whom, and for how long."""
    log.info(
        "429 on %s: %s budget %s (%d per %d s) spent by %s, retry in %d s",
        breach.endpoint,
        breach.key_kind,
        breach.policy,
        breach.limit,
        breach.window,
        breach.client,
        breach.retry_after,
    )


guards = Guards(app, on_breach=report_breach)

THINGS = {"apple": "red", "banana": "yellow"}
served = {"things": 0}  # how often the view really ran (a cache hit does not run it)


@guards.user_loader
async def current_user_id() -> str | None:
    """The caller's id, or None for anonymous requests (per-user limits and entries)."""
    return request.headers.get("X-User") or None


@app.get("/healthz")
@exempt
async def healthz() -> dict[str, str]:
    """Exempt from the default limit: a load balancer may ask as often as it likes."""
    return {"status": "ok"}


@app.get("/hello")
async def hello() -> dict[str, str]:
    """No guard of its own: the default limit (GUARDS_DEFAULT_LIMITS) covers it."""
    return {"hello": "world"}


@app.get("/things")
@rate_limited("50/hour")
@protected(limit=2, minutes=720)
@cached(minutes=5)
async def things() -> dict[str, object]:
    """The snippet of the README: limited, protected and cached, in any order."""
    served["things"] += 1
    return {"data": THINGS, "served": served["things"]}


@app.get("/things/<name>")
@protected(limit=3, minutes=60)
async def thing(name: str) -> dict[str, str]:
    """Guessing names is what ``protected`` stops: 3 misses, then blocked for an hour."""
    if name not in THINGS:
        abort(404)
    return {"name": name, "colour": THINGS[name]}


@app.get("/me")
@rate_limited(limit=5, minutes=1)
@cached(minutes=1, unique_per_user=True)
async def me() -> dict[str, str | None]:
    """Per-user budget and per-user cache entries: one user never sees another's."""
    return {"user": await current_user_id()}


reports = Blueprint("reports", __name__, url_prefix="/reports")


@reports.get("/daily")
async def daily() -> dict[str, str]:
    """Expensive to compute: the blueprint's limit, not the default, covers it."""
    return {"report": "daily"}


@reports.get("/weekly")
async def weekly() -> dict[str, str]:
    """Its own budget of the same blueprint limit (one per route rule)."""
    return {"report": "weekly"}


guards.limit_blueprint(reports, "3/minute")
app.register_blueprint(reports)
