"""A minimal Quart app guarded by quart-api's guards: no database, its own users.

Run it (memory stores)::

    hypercorn examples.minimal_app:app

or shared by several workers, with real stores::

    REDIS_URL=redis://127.0.0.1:6379/0 MEMCACHED_SERVERS=127.0.0.1:11211 \\
        hypercorn --workers 2 examples.minimal_app:app

Who the user is comes from an ``X-User`` header, standing in for whatever
authentication an app has: the guards only need a callable that returns a
stable id (or None). This app reads its own settings from the environment; the
guards themselves read them from ``app.config``.
"""

from __future__ import annotations

import os

from quart import Quart, abort, request

from quart_api.guards import Guards, cached, protected, rate_limited

app = Quart(__name__)
app.config.update(
    REDIS_URL=os.environ.get("REDIS_URL") or None,  # unset: in-process memory stores
    MEMCACHED_SERVERS=os.environ.get("MEMCACHED_SERVERS") or None,
)
guards = Guards(app)

THINGS = {"apple": "red", "banana": "yellow"}
served = {"things": 0}  # how often the view really ran (a cache hit does not run it)


@guards.user_loader
async def current_user_id() -> str | None:
    """The caller's id, or None for anonymous requests (per-user limits and entries)."""
    return request.headers.get("X-User") or None


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Unguarded: costs nothing extra for having Guards installed."""
    return {"status": "ok"}


@app.get("/things")
@rate_limited(limit=50, minutes=60)
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
