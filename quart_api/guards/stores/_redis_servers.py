"""Where a Redis link's commands go: one server, the sentinels' primary, or a cluster's nodes.

Each kind hands the link a connection pool per command (by the hash slot of its keys)
and hears about the pools that failed. :class:`OneServer` is a URL's server or the
primary the sentinels name (a ``SentinelConnectionPool`` asks them on every new
connection). :class:`ClusterNodes` keeps the cluster's slot map, read with
``CLUSTER SLOTS``:

- at the first call (bounded by ``connect_timeout``);
- after a ``MOVED`` reply (that slot at once, then the whole map);
- after a node failed (a connection error or a timeout: a failover may have moved its
  slots), in the background and at most once per ``refresh_interval``, so a worker
  finds a promoted replica within about that long of the promotion, and a dead node
  never costs a request more than its own call.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from . import _redis_adapter as redis_py
from .base import StoreError

__all__ = ["SLOTS", "ClusterNodes", "OneServer", "Servers"]

log = logging.getLogger("quart_api.guards")

SLOTS = 16_384
Address = tuple[str, int]
_ASK_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *redis_py.CLIENT_ERRORS)


class Servers:
    """The pools a link sends to; nothing connects until the first call."""

    async def pools_for(self, slots: list[int]) -> list[redis_py.Pool | None]:
        """One pool per slot (None: no node serves that slot now)."""
        raise NotImplementedError

    async def primaries(self) -> list[redis_py.Pool]:
        """One pool per primary: where ``SCAN`` and ``PING`` go."""
        raise NotImplementedError

    def failed(self, pool: redis_py.Pool) -> None:
        """``pool``'s server failed a call (a connection error or a timeout)."""

    def moved(self, slot: int, host: str, port: int) -> None:
        """A ``MOVED`` reply named the node that serves ``slot`` now."""

    def owns(self, pool: redis_py.Pool) -> bool:
        """Whether ``pool`` is still in use (connections of a closed one are dropped)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class OneServer(Servers):
    """A single server: a pool made by ``make_pool`` on first use (``close`` drops it)."""

    def __init__(
        self,
        make_pool: Callable[[], redis_py.Pool],
        close_extra: Callable[[], Any] | None = None,
    ) -> None:
        self._make_pool = make_pool
        self._close_extra = close_extra
        self._pool: redis_py.Pool | None = None

    def _current(self) -> redis_py.Pool:
        if self._pool is None:
            self._pool = self._make_pool()
        return self._pool

    async def pools_for(self, slots: list[int]) -> list[redis_py.Pool | None]:
        pool = self._current()
        return [pool] * len(slots)

    async def primaries(self) -> list[redis_py.Pool]:
        return [self._current()]

    def owns(self, pool: redis_py.Pool) -> bool:
        return pool is self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await redis_py.close_pool(pool)
        if self._close_extra is not None:
            await self._close_extra()


class ClusterNodes(Servers):
    """A Redis Cluster's nodes, each with its own pool, found through ``CLUSTER SLOTS``."""

    def __init__(
        self,
        startup: list[Address],
        auth: dict[str, str],
        *,
        make_pool: Callable[[str, int], redis_py.Pool],
        connect_timeout: float,
        refresh_interval: float = 0.5,
    ) -> None:
        self._startup = startup
        self._auth = auth
        self._make_pool = make_pool
        self._connect_timeout = connect_timeout
        self._refresh_interval = refresh_interval
        self._pools: dict[Address, redis_py.Pool] = {}
        self._slots: list[Address | None] | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._last_discovery = -float("inf")
        self._suspects: set[Address] = set()
        #: completed reads of the slot map (tests and benchmarks watch it)
        self.refreshes = 0

    def _pool_at(self, address: Address) -> redis_py.Pool:
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = self._make_pool(*address)
        return pool

    async def pools_for(self, slots: list[int]) -> list[redis_py.Pool | None]:
        if self._slots is None:
            await self._rediscover(wait=True)
        table = self._slots
        if table is None:  # pragma: no cover - _rediscover raises instead
            raise StoreError("redis cluster: no slot map")
        return [None if table[s] is None else self._pool_at(table[s]) for s in slots]  # type: ignore[arg-type]

    async def primaries(self) -> list[redis_py.Pool]:
        if self._slots is None:
            await self._rediscover(wait=True)
        return [self._pool_at(a) for a in dict.fromkeys(a for a in self._slots or () if a)]

    def owns(self, pool: redis_py.Pool) -> bool:
        return any(p is pool for p in self._pools.values())

    def failed(self, pool: redis_py.Pool) -> None:
        for address, known in self._pools.items():
            if known is pool:
                self._suspects.add(address)
        self._refresh_soon()

    def moved(self, slot: int, host: str, port: int) -> None:
        if self._slots is not None and 0 <= slot < SLOTS:
            self._slots[slot] = (host, port)
        self._refresh_soon()

    def _refresh_soon(self) -> None:
        """Read the slot map again in the background, at most once per refresh interval."""
        loop = asyncio.get_running_loop()
        if self._discovery is not None and not self._discovery.done():
            return
        if loop.time() - self._last_discovery < self._refresh_interval:
            return
        task = loop.create_task(self._discover())
        task.add_done_callback(_log_failure)
        self._discovery = task

    async def _rediscover(self, *, wait: bool) -> None:
        """Read the slot map now (one read at a time); raise ``StoreError`` if no node answers."""
        if self._discovery is None or self._discovery.done():
            task = asyncio.get_running_loop().create_task(self._discover())
            task.add_done_callback(_log_failure)
            self._discovery = task
        if wait:
            await asyncio.shield(self._discovery)

    async def _discover(self) -> None:
        self._last_discovery = asyncio.get_running_loop().time()
        known = [a for a in dict.fromkeys(a for a in self._slots or () if a)]
        random.shuffle(known)
        # Nodes that just failed are asked last; the startup nodes after the known ones.
        order = [a for a in known if a not in self._suspects]
        order += [a for a in self._startup if a not in order and a not in self._suspects]
        order += [a for a in (*known, *self._startup) if a in self._suspects and a not in order]
        errors = []
        for address in dict.fromkeys(order):
            try:
                reply = await self._ask(address, ("CLUSTER", "SLOTS"))
            except StoreError as error:
                errors.append(f"{address[0]}:{address[1]}: {error}")
                continue
            self._slots = _slot_table(reply, address)
            self._suspects.clear()
            self.refreshes += 1
            return
        raise StoreError(f"redis cluster: no node answered CLUSTER SLOTS ({'; '.join(errors)})")

    async def _ask(self, address: Address, command: tuple[Any, ...]) -> Any:
        """One command on a fresh connection to ``address``, bounded by ``connect_timeout``."""
        pool = self._pool_at(address)
        conn = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                conn = await redis_py.get_connection(pool)
                await redis_py.send(conn, redis_py.pack(conn, [command]))
                reply = await redis_py.read_reply(conn)
        except _ASK_ERRORS as error:
            if conn is not None:
                await redis_py.drop(conn)
                await redis_py.release(pool, conn)
            raise StoreError(f"{type(error).__name__} {error}") from error
        await redis_py.release(pool, conn)
        return reply

    async def close(self) -> None:
        discovery, self._discovery = self._discovery, None
        if discovery is not None and not discovery.done():
            discovery.cancel()
        pools, self._pools = self._pools, {}
        self._slots = None
        for pool in pools.values():
            await redis_py.close_pool(pool)


def _slot_table(reply: Any, asked: Address) -> list[Address | None]:
    """``CLUSTER SLOTS`` as a table slot -> primary (an empty host: the node asked)."""
    table: list[Address | None] = [None] * SLOTS
    for entry in reply:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
        address = (host or asked[0], int(primary[1]))
        for slot in range(start, end + 1):
            table[slot] = address
    return table


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("redis cluster slot map not refreshed: %s", task.exception())
