"""The ``@cached`` flow of a guarded view: hit, stale, single flight, refresh, store.

Runs after the limits, bans and pre-checks (``_runner``), so a hit never skips them.
A fresh hit costs one memcached key: the namespace generation that makes
invalidation O(1) is itself cached in-process for a second. A miss runs the view
once per key, in this process (a shared future) and across processes (an ``add``
lock, polled by the others); an expired entry is served stale meanwhile, and also
when its refresh fails. Keys, entries and the storage gate are in ``_cache``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from quart import Response, request
from werkzeug.exceptions import HTTPException

from quart_api.guards import _metrics
from quart_api.guards._cache import (
    Entry,
    cache_key,
    decode_entry,
    encode_entry,
    etag_for,
    etag_matches,
    generation_key,
    kept_headers,
    normalized_query,
    storable,
)
from quart_api.guards._context import RequestFacts, store_op
from quart_api.guards._extension import GuardsState
from quart_api.guards._specs import CacheSpec

__all__ = ["cached_response", "invalidate_namespace"]

log = logging.getLogger("quart_api.guards")

_T = TypeVar("_T")
_LOCK_TTL = 10  # seconds a cross-process refresh lock may live (a slow view)
# Polls for another worker's entry: quick at first, then every 100 ms, for as long as
# a refresh may take (the lock's TTL), since a fixed short budget lets a slow view
# stampede every worker anyway.
_LOCK_POLLS = (0.01, 0.02, 0.04, 0.08) + (0.1,) * (_LOCK_TTL * 10)


async def _cache_op(state: GuardsState, call: Awaitable[_T], ctx: RequestFacts | None) -> _T | None:
    return await store_op(state, state.cache_breaker, call, ctx)


async def _generation(state: GuardsState, namespace: str, ctx: RequestFacts | None = None) -> int:
    """The namespace generation, cached in-process for ``generation_ttl`` seconds.

    Re-reading it on every hit would make each hit cost two keys; this way a
    hit costs one, and another worker's invalidation is seen within a second.
    """
    now = state.clock()
    known = state.generations.get(namespace)
    if known is not None and now - known[1] < state.generation_ttl:
        return known[0]
    raw = await _cache_op(state, state.cache.get(generation_key(state.key_prefix, namespace)), ctx)
    generation = int(raw) if raw and raw.isdigit() else 0
    state.generations[namespace] = (generation, now)
    return generation


async def invalidate_namespace(state: GuardsState, namespace: str) -> None:
    """Bump the namespace generation: its entries are never asked for again."""
    generation = await _cache_op(
        state, state.cache.incr(generation_key(state.key_prefix, namespace)), None
    )
    if generation is None:  # the store is down: at least this process stops serving it
        known = state.generations.get(namespace, (0, 0.0))[0]
        generation = known + 1
    state.generations[namespace] = (int(generation), state.clock())


def _serve(entry: Entry, label: str) -> Response:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and etag_matches(if_none_match, entry.etag):
        response = Response(b"", status=304)
        response.headers["ETag"] = entry.etag
        for name, value in entry.headers:
            if name.lower() in ("cache-control", "vary", "expires", "content-location"):
                response.headers[name] = value
    else:
        response = entry.response()
    response.headers["X-Cache"] = label
    return response


def _has_credentials() -> bool:
    headers = request.headers
    return "Authorization" in headers or "Cookie" in headers


async def cached_response(
    state: GuardsState,
    endpoint: str,
    spec: CacheSpec,
    ctx: RequestFacts,
    run_view: Callable[[], Awaitable[Response]],
) -> Response:
    """The answer to a GET or HEAD of a ``@cached`` view; ``run_view`` computes it."""
    user: str | None = None
    if spec.unique_per_user:
        user = await ctx.user_id()
        if user is None and _has_credentials():
            _metrics.CACHE_BYPASS.inc()
            return await run_view()  # never stored under a shared key
    namespace = spec.namespace or endpoint
    generation = await _generation(state, namespace, ctx)
    key = cache_key(
        state.key_prefix,
        namespace,
        generation,
        user,
        request.path,
        normalized_query(request.query_string),
    )
    raw = await _cache_op(state, state.cache.get(key), ctx)
    entry = decode_entry(raw) if raw else None
    now = state.clock()
    if entry is not None and now < entry.fresh_until:
        _metrics.CACHE_HIT.inc()
        return _serve(entry, "hit")
    stale = entry if entry is not None and now < entry.stale_until else None
    waiting = state.inflight.get(key)
    if waiting is not None:  # this process is already computing it
        if stale is not None:
            _metrics.CACHE_STALE.inc()
            return _serve(stale, "stale")
        _metrics.CACHE_MISS.inc()
        shared: Entry | None = await asyncio.shield(waiting)
        if shared is not None:
            return _serve(shared, "hit")
        return await run_view()  # it was not storable: each request answers for itself
    # Claim the key before the next await, or every concurrent miss of this process
    # would get past the check above while this one waits for memcached.
    future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
    state.inflight[key] = future
    computed: Entry | None = None
    lock = key + b":lock"
    locked = None
    try:
        locked = await _cache_op(state, state.cache.add(lock, b"1", _LOCK_TTL), ctx)
        if locked is False:  # another worker is refreshing this key
            if stale is not None:
                _metrics.CACHE_STALE.inc()
                return _serve(stale, "stale")
            for delay in _LOCK_POLLS:  # wait for its entry rather than stampede
                await asyncio.sleep(delay)
                raw = await _cache_op(state, state.cache.get(key), ctx)
                found = decode_entry(raw) if raw else None
                if found is not None and state.clock() < found.stale_until:
                    computed = found
                    _metrics.CACHE_HIT.inc()
                    return _serve(found, "hit")
                # No entry yet: take the lock over if its holder finished without
                # storing (an uncacheable answer) or died; otherwise keep waiting.
                locked = await _cache_op(state, state.cache.add(lock, b"1", _LOCK_TTL), ctx)
                if locked is not False:
                    break
        if stale is None:
            _metrics.CACHE_MISS.inc()
        response, computed = await _refresh(state, spec, ctx, key, run_view, stale)
        return response
    finally:
        future.set_result(computed)
        del state.inflight[key]
        if locked:
            await _cache_op(state, state.cache.delete(lock), ctx)


async def _refresh(
    state: GuardsState,
    spec: CacheSpec,
    ctx: RequestFacts,
    key: bytes,
    run_view: Callable[[], Awaitable[Response]],
    stale: Entry | None,
) -> tuple[Response, Entry | None]:
    """Run the view for ``key`` and store its answer; a failure falls back on ``stale``."""
    try:
        response = await run_view()
    except HTTPException as error:
        if stale is None or (error.code or 500) < 500:
            raise
        return _serve_stale(stale, error), None
    except Exception as error:
        if stale is None:
            raise
        return _serve_stale(stale, error), None
    if stale is not None and response.status_code >= 500:
        return _serve_stale(stale, None), None
    entry = await _store(state, spec, ctx, key, response)
    if entry is None:
        response.headers["X-Cache"] = "miss"
        return response, None
    return _serve(entry, "miss"), entry


def _serve_stale(stale: Entry, error: BaseException | None) -> Response:
    """The stale copy instead of a failed refresh; the failure is still logged."""
    _metrics.CACHE_STALE.inc()
    if error is not None and not isinstance(error, HTTPException):
        log.error(
            "view failed while refreshing %s; served the stale copy", request.path, exc_info=error
        )
    return _serve(stale, "stale")


async def _store(
    state: GuardsState, spec: CacheSpec, ctx: RequestFacts, key: bytes, response: Response
) -> Entry | None:
    """Store ``response`` if the gate allows it.

    "Per user" for the gate is whether this entry's key names a user, not whether the
    view asked for per-user entries: an anonymous request's entry is shared by every
    anonymous client, so it must not hold a ``private`` response.
    """
    per_user = spec.unique_per_user and ctx.user is not None  # the user is in the key
    if not storable(response, per_user=per_user, request_headers=request.headers):
        return None
    body = await response.get_data(as_text=False)
    now = state.clock()
    entry = Entry(
        status=response.status_code,
        headers=kept_headers(response, spec.extra_headers),
        body=body,
        etag=etag_for(body),
        stored_at=now,
        fresh_until=now + spec.ttl,
        stale_until=now + spec.ttl + spec.stale,
    )
    encoded = encode_entry(entry)
    if len(encoded) <= state.cache.max_item_bytes:
        await _cache_op(state, state.cache.set(key, encoded, spec.ttl + spec.stale), ctx)
    return entry
