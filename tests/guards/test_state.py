"""``store_op``: the one place a store call fails open."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from quart_api.guards._breaker import Breaker
from quart_api.guards._state import store_op
from quart_api.guards.stores.base import StoreError


async def test_a_failed_lookup_skipped_by_an_open_breaker_is_not_logged_unretrieved() -> None:
    # A batched memcached get fails every waiter at once; the first ones open the
    # breaker, and the others are then skipped: their errors must be retrieved, or
    # asyncio logs one traceback per request while the store is down.
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        breaker = Breaker("memcached", threshold=1)
        breaker.failure(StoreError("down"))
        assert breaker.is_open
        failed: asyncio.Future[bytes | None] = loop.create_future()
        failed.set_exception(StoreError("memcached get failed"))
        assert await store_op(breaker, failed) is None
        del failed
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


async def test_a_pending_early_lookup_skipped_by_an_open_breaker_is_cancelled() -> None:
    breaker = Breaker("memcached", threshold=1)
    breaker.failure(StoreError("down"))
    pending: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    assert await store_op(breaker, pending) is None
    assert pending.cancelled()
