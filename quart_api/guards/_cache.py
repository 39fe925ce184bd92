"""The ``@cached`` flow of a guarded view: hit, stale, single flight, refresh, store.

Runs after the limits, bans and pre-checks (``_pipeline``), so a hit never skips them.
A fresh hit costs one memcached key: the namespace generation that makes
invalidation O(1) is itself cached in-process for ``generation_ttl`` (a second), so
``invalidate()`` reaches other workers within about a second. A generation that
cannot be read is unknown, never assumed: the request then neither reads nor
stores the cache. A miss runs the view once per key, in this process (a shared
future) and across processes (an ``add`` lock, polled by the others); an expired
entry is served stale meanwhile, and also when its refresh fails. Entries are
stored for a little longer than they may be served (memcached expires on a
whole-second clock that can run up to a second ahead); each entry's own times
decide whether it is fresh, stale or gone. Keys, entries and the storage gate are
in ``_cache_entries``.

A lookup may start before the limit check answers (:func:`start_lookup`), so that a
hit across a network waits for one round trip, not two; the entry is still served
only here, after the check allowed the request and the pre-checks passed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from quart import Response
from werkzeug.exceptions import HTTPException

from quart_api.guards import _metrics
from quart_api.guards._cache_entries import (
    Entry,
    cache_key,
    encode_entry,
    entry_key_prefix,
    etag_for,
    etag_matches,
    generation_key,
    kept_headers,
    listed_query,
    normalized_query,
    storable,
)
from quart_api.guards._decorators import CacheSpec
from quart_api.guards._state import CacheLookup, GuardsState, RequestFacts, store_op, user_key

__all__ = ["CachePlan", "cached_response", "drop_lookup", "invalidate_namespace", "start_lookup"]

log = logging.getLogger("quart_api.guards")

_LOCK_TTL = 10  # seconds a cross-process refresh lock may live (a slow view)
#: Seconds an entry outlives its stale window in the store: memcached's clock ticks
#: in whole seconds and lags the real time by up to one, so an item stored for
#: exactly ``ttl + stale`` could vanish up to a second early.
_EXPIRY_MARGIN = 2
# Polls for another worker's entry: quick at first, then every 100 ms, for as long as
# a refresh may take (the lock's TTL), since a fixed short budget lets a slow view
# stampede every worker anyway.
_LOCK_POLLS = (0.01, 0.02, 0.04, 0.08) + (0.1,) * (_LOCK_TTL * 10)
#: Headers a 304 repeats from the entry (RFC 9110 15.4.5).
_NOT_MODIFIED_HEADERS = frozenset({"cache-control", "vary", "expires", "content-location"})
_CACHEABLE_METHODS = frozenset({"GET", "HEAD"})


class CachePlan:
    """One endpoint's ``@cached``, with its namespace and key prefixes resolved at start-up."""

    __slots__ = ("generation_key", "key_prefix", "namespace", "spec")

    def __init__(self, state: GuardsState, spec: CacheSpec, endpoint: str) -> None:
        self.spec = spec
        self.namespace = endpoint if spec.namespace is None else spec.namespace
        self.key_prefix = entry_key_prefix(state.key_prefix, self.namespace)
        self.generation_key = generation_key(state.key_prefix, self.namespace)


async def _read_generation(state: GuardsState, plan: CachePlan, ctx: RequestFacts) -> int | None:
    """The namespace generation, remembered for ``generation_ttl`` seconds; None if unknown.

    Re-reading it on every hit would make each hit cost two keys; this way a hit
    costs one, and another worker's invalidation is seen within a second. A failed
    read is not remembered and not guessed: generation 0 would bring back entries
    from before an ``invalidate()``.
    """
    now = state.clock()
    generation = await store_op(
        state.cache_breaker, _fetch_generation(state, plan.generation_key), ctx
    )
    if generation is not None:
        state.generations[plan.namespace] = (generation, now)
    return generation


async def _fetch_generation(state: GuardsState, key: bytes) -> int:
    """The stored generation (0 while the namespace was never invalidated)."""
    raw = await state.cache.get(key)
    return int(raw) if raw is not None and raw.isdigit() else 0


async def invalidate_namespace(state: GuardsState, namespace: str) -> None:
    """Bump the namespace generation: its entries are never asked for again."""
    generation = await store_op(
        state.cache_breaker, state.cache.incr(generation_key(state.key_prefix, namespace))
    )
    if generation is None:  # the store is down: at least this process stops serving it
        known = state.generations.get(namespace, (0, 0.0))[0]
        generation = known + 1
    state.generations[namespace] = (int(generation), state.clock())


def _serve(ctx: RequestFacts, entry: Entry, label: str) -> Response:
    # getlist, not get: a missing header costs get (and `in`) a raised KeyError.
    if_none_match = ctx.conn.headers.getlist("If-None-Match")
    if if_none_match and if_none_match[0] and etag_matches(if_none_match[0], entry.etag):
        response = Response(b"", status=304)
        # RFC 9110 15.4.5: no representation metadata, and no Content-Length that
        # differs from the 200's (8.6): only the validator and the listed fields.
        del response.headers["Content-Type"]
        del response.headers["Content-Length"]
        response.headers["ETag"] = entry.etag
        for name, value in entry.headers:
            if name.lower() in _NOT_MODIFIED_HEADERS:
                response.headers[name] = value
        response.headers["X-Cache"] = label
        return response
    return entry.response(label)


def _has_credentials(ctx: RequestFacts) -> bool:
    headers = ctx.conn.headers
    return "Authorization" in headers or "Cookie" in headers


def _entry_key(plan: CachePlan, ctx: RequestFacts, generation: int, user: str | None) -> bytes:
    conn = ctx.conn
    names = plan.spec.query_names
    if not conn.query_string:
        query = ""
    elif names is None:
        query = normalized_query(conn.query_string)
    else:
        query = listed_query(conn.args, names)
    return cache_key(plan.key_prefix, generation, user, conn.path, query)


def start_lookup(state: GuardsState, plan: CachePlan, ctx: RequestFacts) -> None:
    """Start this request's cache lookup now, while its limits are being checked.

    Only what costs no call of its own: the user must be known already (the limits
    loaded it), the generation remembered, the cache's breaker closed, and the client
    not refused lately (a flood of refused requests must not cost memcached a key
    each). Otherwise :func:`cached_response` looks the entry up itself, as before.
    Nothing here serves anything: the reply waits in ``ctx.lookup``.
    """
    if ctx.conn.method not in _CACHEABLE_METHODS or ctx.user_error is not None:
        return  # (a refused credential is answered 401 whatever the cache holds)
    user: str | None = None
    if plan.spec.unique_per_user:
        if not ctx.user_loaded:
            return
        user = ctx.user
        if user is None and _has_credentials(ctx):
            return
    known = state.generations.get(plan.namespace)
    if known is None or state.clock() - known[1] >= state.generation_ttl:
        return
    breaker = state.cache_breaker
    if breaker.is_open or breaker in ctx.failed:
        return
    refused = state.refused
    if refused and (
        refused.refused(ctx.client_key())
        or (ctx.user is not None and refused.refused(user_key(ctx.user)))
    ):
        return
    key = _entry_key(plan, ctx, known[0], user)
    reply = state.cache.get_soon(key)
    if reply is not None:
        ctx.lookup = CacheLookup(known[0], key, reply)


def drop_lookup(ctx: RequestFacts) -> None:
    """Forget a lookup the request did not use (it was refused, or failed first)."""
    lookup = ctx.lookup
    if lookup is None:
        return
    ctx.lookup = None
    # Pending: dropped from its batch. Failed already: cancel() marks the error as
    # retrieved, so asyncio does not log a lookup that nobody needed.
    lookup.reply.cancel()


async def cached_response(
    state: GuardsState,
    plan: CachePlan,
    ctx: RequestFacts,
    run_view: Callable[[], Awaitable[Response]],
) -> Response:
    """The answer to a GET or HEAD of a ``@cached`` view; ``run_view`` computes it."""
    user: str | None = None
    if plan.spec.unique_per_user:
        user = await ctx.user_id()  # raises the loader's refusal (a bad token)
        if user is None and _has_credentials(ctx):
            _metrics.CACHE_BYPASS.inc()
            return await run_view()  # never stored under a shared key
    known = state.generations.get(plan.namespace)
    if known is not None and state.clock() - known[1] < state.generation_ttl:
        generation: int | None = known[0]
    else:
        generation = await _read_generation(state, plan, ctx)
    if generation is None:  # which entries are current is unknown: use none of them
        _metrics.CACHE_BYPASS.inc()
        return await run_view()
    lookup = ctx.lookup
    breaker = state.cache_breaker
    if lookup is not None and lookup.generation == generation and not breaker.is_open:
        ctx.lookup = None
        key = lookup.key
        reply: Awaitable[bytes | None] = lookup.reply
    else:  # none started, or the namespace was invalidated or the cache failed since
        key = _entry_key(plan, ctx, generation, user)
        reply = state.cache.get(key)
    raw = await store_op(breaker, reply, ctx)
    entry = state.decoded.decode(key, raw) if raw else None
    now = state.clock()
    if entry is not None and now < entry.fresh_until:
        _metrics.count_cache_hit()
        return _serve(ctx, entry, "hit")
    stale = entry if entry is not None and now < entry.stale_until else None
    return await _miss(state, plan.spec, ctx, key, stale, run_view)


async def _miss(
    state: GuardsState,
    spec: CacheSpec,
    ctx: RequestFacts,
    key: bytes,
    stale: Entry | None,
    run_view: Callable[[], Awaitable[Response]],
) -> Response:
    """No fresh entry: one request per key refreshes it, the others wait or get ``stale``."""
    waiting = state.inflight.get(key)
    if waiting is not None:  # this process is already computing it
        if stale is not None:
            _metrics.CACHE_STALE.inc()
            return _serve(ctx, stale, "stale")
        _metrics.CACHE_MISS.inc()
        shared: Entry | None = await asyncio.shield(waiting)
        if shared is not None:
            return _serve(ctx, shared, "hit")
        return await run_view()  # it was not storable: each request answers for itself
    # Claim the key before the next await, or every concurrent miss of this process
    # would get past the check above while this one waits for memcached.
    future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
    state.inflight[key] = future
    computed: Entry | None = None
    lock = key + b":lock"
    locked = None
    breaker = state.cache_breaker
    try:
        locked = await store_op(breaker, state.cache.add(lock, b"1", _LOCK_TTL), ctx)
        if locked is False:  # another worker is refreshing this key
            if stale is not None:
                _metrics.CACHE_STALE.inc()
                return _serve(ctx, stale, "stale")
            for delay in _LOCK_POLLS:  # wait for its entry rather than stampede
                await asyncio.sleep(delay)
                raw = await store_op(breaker, state.cache.get(key), ctx)
                found = state.decoded.decode(key, raw) if raw else None
                if found is not None and state.clock() < found.stale_until:
                    computed = found
                    _metrics.count_cache_hit()
                    return _serve(ctx, found, "hit")
                # No entry yet: take the lock over if its holder finished without
                # storing (an uncacheable answer) or died; otherwise keep waiting.
                locked = await store_op(breaker, state.cache.add(lock, b"1", _LOCK_TTL), ctx)
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
            await store_op(breaker, state.cache.delete(lock), ctx)


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
        return _serve_stale(ctx, stale, error), None
    except Exception as error:
        if stale is None:
            raise
        return _serve_stale(ctx, stale, error), None
    if stale is not None and response.status_code >= 500:
        return _serve_stale(ctx, stale, None), None
    entry = await _store(state, spec, ctx, key, response)
    if entry is None:
        response.headers["X-Cache"] = "miss"
        return response, None
    return _serve(ctx, entry, "miss"), entry


def _serve_stale(ctx: RequestFacts, stale: Entry, error: BaseException | None) -> Response:
    """The stale copy instead of a failed refresh; the failure is still logged."""
    _metrics.CACHE_STALE.inc()
    if error is not None and not isinstance(error, HTTPException):
        log.error(
            "view failed while refreshing %s; served the stale copy", ctx.conn.path, exc_info=error
        )
    return _serve(ctx, stale, "stale")


async def _store(
    state: GuardsState, spec: CacheSpec, ctx: RequestFacts, key: bytes, response: Response
) -> Entry | None:
    """Store ``response`` if the gate allows it.

    "Per user" for the gate is whether this entry's key names a user, not whether the
    view asked for per-user entries: an anonymous request's entry is shared by every
    anonymous client, so it must not hold a ``private`` response.
    """
    per_user = spec.unique_per_user and ctx.user is not None  # the user is in the key
    if not storable(response, per_user=per_user, request_headers=ctx.conn.headers):
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
        ttl = spec.ttl + spec.stale + _EXPIRY_MARGIN
        await store_op(state.cache_breaker, state.cache.set(key, encoded, ttl), ctx)
    return entry
