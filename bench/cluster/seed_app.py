"""The seed's stack as its users run it: Flask on gunicorn's sync workers, blocking clients.

The reference ``make cluster-bench`` measures the guards against. One route,
``GET /seed/users``, does per request what the original series' decorators do:

- its rate limiter: ``GET`` the client's counter, refuse at the limit, else ``INCR``
  and ``EXPIRE`` (three Redis calls, three round trips; the ``EXPIRE`` on every hit
  is the original's flaw, kept because it is what the original costs);
- its cache: one memcached ``get`` of the response (a hit), answered as is.

The body is the full stack's users page (``bench.apps.USERS_PAGE_BODY``), so the two
answer the same bytes. It has no token check, no scope check and no database, which
favours it. The clients are the blocking ones its users would pick: redis-py
(``RedisCluster`` for a cluster, ``Sentinel.master_for`` for a Sentinel group) and
pymemcache's ``HashClient`` over every memcached, without timeouts (the original has
none). Configuration: ``SEED_REDIS_URL``, ``SEED_MEMCACHED_SERVERS``, ``SEED_RATE_LIMIT``
(requests a minute).

    gunicorn --workers 5 "bench.cluster.seed_app:create_app()"
"""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask, Response, abort, request
from pymemcache.client.hash import HashClient
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from bench.apps import HUGE_LIMIT, USERS_PAGE_BODY
from bench.cluster.sentinel_store import parse_sentinel_url

__all__ = ["create_app"]

CACHE_KEY = "seed:users"


def _hosts(text: str) -> list[tuple[str, int]]:
    pairs = []
    for part in text.split(","):
        host, _, port = part.strip().rpartition(":")
        pairs.append((host, int(port)))
    return pairs


def _redis(url: str) -> Any:
    """A blocking client for ``url``: cluster, Sentinel group, or one server."""
    if url.startswith("redis+cluster://"):
        nodes = _hosts(url.partition("://")[2].split("/", 1)[0])
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])
    if url.startswith("redis+sentinel://"):
        sentinels, name, db = parse_sentinel_url(url)
        return Sentinel(sentinels).master_for(name, db=db)
    return redis.Redis.from_url(url)


def create_app() -> Flask:
    """The seed's route on the stores named by the ``SEED_*`` variables."""
    store = _redis(os.environ["SEED_REDIS_URL"])
    cache = HashClient(_hosts(os.environ["SEED_MEMCACHED_SERVERS"]))
    limit = int(os.environ.get("SEED_RATE_LIMIT", str(HUGE_LIMIT)))
    window = 60
    app = Flask("bench_seed")

    @app.get("/seed/healthz")
    def healthz() -> Response:
        return Response(b'{"ok": true}', mimetype="application/json")

    @app.get("/seed/users")
    def users() -> Response:
        key = f"seed:rl:users:{request.remote_addr}"
        count = store.get(key)
        if count is not None and int(count) >= limit:
            abort(429)
        store.incr(key)
        store.expire(key, window)
        body = cache.get(CACHE_KEY)
        if body is None:
            body = USERS_PAGE_BODY
            cache.set(CACHE_KEY, body, expire=300)
        return Response(body, mimetype="application/json")

    return app
