"""One memcached round trip for every cache lookup of an event-loop turn.

Concurrent requests for cached routes each want one key. Sent one by one,
each ``get`` is a round trip and a pooled connection; gathered per loop turn
and per server, they become one ``get k1 k2 ...``, and requests for the same
key (a hot entry under load) share one fetch. A lookup still costs at most
one key fetched, and never waits longer than it would have alone: the batch
is sent at the end of the turn it was asked in.

Each waiter has its own future, so cancelling one request cancels nothing else;
a failed batch fails each waiter with its own copy of the :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from quart_api.guards.stores.base import StoreError

__all__ = ["GetBatcher"]

S = TypeVar("S")
Fetch = Callable[[S, list[bytes]], Awaitable[dict[bytes, bytes]]]


class GetBatcher(Generic[S]):
    """Gathers ``get(server, key)`` calls of one loop turn into one ``fetch`` per server."""

    __slots__ = ("_fetch", "_loop", "_pending", "_tasks", "fetches", "keys_fetched")

    def __init__(self, fetch: Fetch[S]) -> None:
        self._fetch = fetch
        self._pending: dict[S, dict[bytes, list[asyncio.Future[bytes | None]]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: keys sent to the servers (after sharing): what the servers count as gets.
        self.keys_fetched = 0
        #: get commands sent (round trips).
        self.fetches = 0

    def get(self, server: S, key: bytes) -> asyncio.Future[bytes | None]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a batch queued on a loop that is gone has no waiters
            self._pending = {}
            self._loop = loop
        batch = self._pending.get(server)
        if batch is None:
            batch = self._pending[server] = {}
            loop.call_soon(self._flush, server)
        future: asyncio.Future[bytes | None] = loop.create_future()
        waiters = batch.get(key)
        if waiters is None:
            batch[key] = [future]
        else:
            waiters.append(future)
        return future

    def _flush(self, server: S) -> None:
        batch = self._pending.pop(server, None)
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(server, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, server: S, batch: dict[bytes, list[asyncio.Future[bytes | None]]]
    ) -> None:
        keys = [key for key, waiters in batch.items() if not all(f.done() for f in waiters)]
        if not keys:
            return
        self.keys_fetched += len(keys)
        self.fetches += 1
        try:
            values = await self._fetch(server, keys)
        except BaseException as exc:
            for waiters in batch.values():
                for future in waiters:
                    if not future.done():
                        future.set_exception(_copy(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for key, waiters in batch.items():
            value = values.get(key)
            for future in waiters:
                if not future.done():
                    future.set_result(value)


def _copy(exc: BaseException) -> BaseException:
    """One exception instance per waiter (tracebacks differ); non-errors become StoreError."""
    if isinstance(exc, StoreError):
        copy = type(exc)(*exc.args)
        copy.__cause__ = exc.__cause__
        return copy
    if isinstance(exc, Exception):
        return exc
    return StoreError(f"memcached get abandoned: {exc!r}")
