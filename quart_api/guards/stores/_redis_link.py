"""How :class:`RedisCounterStore` talks to Redis: bounded pipelines, one per loop tick.

The calls that concurrent requests make in one event-loop tick go out as one pipeline
(per server), so under load a request costs well under one round trip. A pipeline is
written at once on connections the link keeps between pipelines (each server's
commands on one of its connections; a cluster's nodes all written before any reply is
read), then every reply is read: one task, no hop through the loop between writing and
reading, whatever the number of nodes.

Bounds, kept apart on purpose: waiting for a free connection is not an outage (a burst
must queue, never slip through a fail-open limit), so it waits up to ``pool_timeout``;
opening a connection is bounded by ``connect_timeout`` (by ``timeout`` while the server
seems in trouble); the commands by ``timeout``, counted from when they were written
and judged by :class:`~._deadline.Deadline`, which does not blame the server for a
reply the busy loop had not read yet. A connection whose reply was cut off is dropped,
never reused. Every client error leaves through one choke point (``_ERRORS``) as
:class:`StoreError` (:class:`StoreTimeout` for timeouts); redis-py itself is used only
through ``_redis_adapter``.

Replies that need another round: ``NOSCRIPT`` (a restart or failover emptied the
script cache: the scripts are loaded on that server and the commands sent again,
once) and, in a cluster, ``MOVED`` (sent again, once, to the node it names).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from . import _redis_adapter as redis_py
from ._deadline import Deadline
from ._redis_servers import Servers
from .base import ErrorMap, StoreError, StoreTimeout

__all__ = ["CHECK", "FAIL", "REFUND", "RELEASE", "Command", "RedisLink"]

Command = tuple[Any, ...]
#: a command and the hash slot of its keys (0 outside a cluster)
Item = tuple[Command, int]


class _Script:
    """A Lua file of ``quart_api/guards/lua``, with the SHA1 that ``EVALSHA`` takes."""

    def __init__(self, name: str) -> None:
        self.source = resources.files("quart_api.guards").joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest().encode()  # noqa: S324
        self.load: Command = ("SCRIPT", "LOAD", self.source)


CHECK = _Script("check")
FAIL = _Script("fail")
REFUND = _Script("refund")
RELEASE = _Script("release")
_LOADS = (CHECK.load, FAIL.load, REFUND.load, RELEASE.load)

_ERRORS = ErrorMap("redis", redis_py.CLIENT_ERRORS, redis_py.CLIENT_TIMEOUTS)
_to_store_error = _ERRORS.convert


@dataclass(slots=True)
class _Exchange:
    """One server's share of a pipeline: its commands, its connection, its replies."""

    pool: redis_py.Pool
    indices: list[int]
    conn: Any = None
    replies: list[Any] = field(default_factory=list)
    #: every reply was read
    done: bool = False
    #: what failed the server's commands (they all get it as their result)
    error: StoreError | None = None

    def results(self) -> list[Any]:
        if self.done:
            return self.replies
        error = self.error or StoreError("redis call did not complete")
        return [error] * len(self.indices)


class RedisLink:
    """Connections to the Redis ``servers`` and the per-tick batcher (see module docstring)."""

    def __init__(
        self,
        servers: Servers,
        *,
        timeout: float,
        connect_timeout: float,
        pool_timeout: float,
        max_connections: int,
        batch: bool,
        late_grace: float,
    ) -> None:
        self.servers = servers
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._max_connections = max_connections
        self._late_grace = late_grace
        self.batch = batch
        #: network round trips made: pipelines sent (a cluster's nodes are written to
        #: together, then read: one round trip of latency for all of them)
        self.round_trips = 0
        # None: nothing sent since start-up or close(); then whether the last call worked.
        # Opening connections is allowed connect_timeout only while nothing says the
        # server is in trouble: against a frozen server every request would pay it.
        self._healthy: bool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._queue: list[tuple[Item, asyncio.Future[Any]]] = []
        #: connections between pipelines, kept out of their pools (see ``_checkout``)
        self._idle: dict[redis_py.Pool, list[Any]] = {}
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Drop every connection; the next call reconnects."""
        self._idle = {}  # closing the pools disconnects them with the others
        self._slots = None
        self._healthy = None
        self._flush_loop = None
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(StoreError("redis store closed"))
        self._queue = []
        try:
            with _ERRORS:
                await self.servers.close()
        except StoreError:
            pass  # closing a dead connection cannot fail in a way that matters

    # --- calls ---------------------------------------------------------------------

    def call(self, command: Command, slot: int = 0) -> Awaitable[Any]:
        """One command's reply (batched with this tick's other calls when enabled).

        Batched, the awaitable is the pipeline's future itself: the caller's await
        resumes straight from the reply, through no coroutine of the link's.
        """
        if self.batch:
            return self.submit(command, slot)
        return self._call_now(command, slot)

    async def _call_now(self, command: Command, slot: int) -> Any:
        return (await self.commands([(command, slot)]))[0]

    def submit(self, command: Command, slot: int = 0) -> asyncio.Future[Any]:
        """Queue ``command`` for this tick's pipeline; the first caller schedules the flush."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._flush_loop is not loop:
            if self._flush_loop is not None:
                self._queue = []  # queued on a loop that is gone: nobody awaits them
            self._flush_loop = loop
            loop.call_soon(self._flush)
        self._queue.append(((command, slot), fut))
        return fut

    async def many(self, items: list[Item]) -> list[Any]:
        """Several replies: through this tick's pipeline when batching, else one now.

        Batched, the commands share one pipeline, so their futures are done together:
        they are awaited in turn (the first await is the only wait), every one of them
        to the end, so no error goes unretrieved; the first error is raised.
        """
        if not self.batch:
            return await self.commands(items)
        futures = [self.submit(command, slot) for command, slot in items]
        results: list[Any] = []
        error: BaseException | None = None
        try:
            for future in futures:
                try:
                    results.append(await future)
                except StoreError as exc:
                    error = error or exc
                    results.append(None)
        except BaseException:  # cancelled: nobody waits for the others either
            for future in futures:
                future.cancel()
            raise
        if error is not None:
            raise error
        return results

    async def commands(self, items: list[Item]) -> list[Any]:
        """Run ``items`` in one pipeline now; raise the first per-command error."""
        results = await self._execute(items)
        for result in results:
            if isinstance(result, BaseException):
                raise _to_store_error(result)
        return results

    async def primaries(self) -> list[redis_py.Pool]:
        """One pool per primary (a cluster's may be discovered now)."""
        with _ERRORS:
            return await self.servers.primaries()

    async def on_pool(self, pool: redis_py.Pool, command: Command) -> Any:
        """One command on one server (a primary of :meth:`Servers.primaries`)."""
        exchange = _Exchange(pool, [0])
        [result] = await self._run([(command, 0)], [exchange])
        if isinstance(result, BaseException):
            raise _to_store_error(result)
        return result

    def _flush(self) -> None:
        self._flush_loop = None
        batch = [entry for entry in self._queue if not entry[1].done()]  # skip cancelled
        self._queue = []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute([item for item, _ in batch])
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(_one_per_waiter(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                if isinstance(result, BaseException):
                    fut.set_exception(_to_store_error(result))
                else:
                    fut.set_result(result)

    # --- pipelines -------------------------------------------------------------------

    async def _execute(self, items: list[Item]) -> list[Any]:
        """One pipeline, then one more round for replies that ask for it (NOSCRIPT, MOVED)."""
        results = await self._route_and_run(items)
        moved = [i for i, r in enumerate(results) if isinstance(r, redis_py.MovedError)]
        for i in moved:
            error = results[i]
            self.servers.moved(error.slot_id, error.host, int(error.port))
        if moved:
            again = await self._route_and_run([items[i] for i in moved])
            for i, result in zip(moved, again, strict=True):
                results[i] = result
        retry = [i for i, r in enumerate(results) if isinstance(r, redis_py.NoScriptError)]
        if retry:
            # Load the scripts where they were missing (each command's own server),
            # in the same pipeline as the commands sent again.
            loads = [(load, items[i][1]) for i in dict.fromkeys(retry) for load in _LOADS]
            again = await self._route_and_run([*loads, *(items[i] for i in retry)])
            for loaded in again[: len(loads)]:
                if isinstance(loaded, BaseException):
                    raise _to_store_error(loaded)
            for i, result in zip(retry, again[len(loads) :], strict=True):
                results[i] = result
        return results

    async def _route_and_run(self, items: list[Item]) -> list[Any]:
        slots = await self._take_slot()
        try:
            with _ERRORS:
                pools = await self.servers.pools_for([slot for _, slot in items])
            exchanges: dict[redis_py.Pool, _Exchange] = {}
            unrouted = []
            for i, pool in enumerate(pools):
                if pool is None:
                    unrouted.append(i)
                    continue
                exchange = exchanges.get(pool)
                if exchange is None:
                    exchange = exchanges[pool] = _Exchange(pool, [])
                exchange.indices.append(i)
            results = await self._exchange(items, list(exchanges.values()))
            for i in unrouted:
                results[i] = StoreError(f"redis cluster: no node serves slot {items[i][1]}")
            return results
        finally:
            slots.release()

    async def _run(self, items: list[Item], exchanges: list[_Exchange]) -> list[Any]:
        slots = await self._take_slot()
        try:
            return await self._exchange(items, exchanges)
        finally:
            slots.release()

    async def _exchange(self, items: list[Item], exchanges: list[_Exchange]) -> list[Any]:
        """Write every server's commands, then read every reply, under one deadline.

        Per-command replies (errors included) come back in place; a server that fails
        fails only its own commands, which come back as :class:`StoreError`.
        """
        results: list[Any] = [None] * len(items)
        loop = asyncio.get_running_loop()
        connect_bound = self._timeout if self._healthy is False else self._connect_timeout
        deadline = Deadline(
            connect_bound, delivered=lambda: _any_reply_waiting(exchanges), grace=self._late_grace
        )
        try:
            async with deadline:
                for exchange in exchanges:
                    await self._open(exchange)
                deadline.reschedule(loop.time() + self._timeout, self._timeout)
                self.round_trips += 1
                for exchange in exchanges:
                    if exchange.conn is not None:
                        await self._write(items, exchange)
                for exchange in exchanges:
                    if exchange.conn is not None:
                        await self._read(items, exchange)
        except TimeoutError:
            for exchange in exchanges:
                if not exchange.done and exchange.error is None:
                    error = StoreTimeout(f"redis timed out after {self._timeout}s")
                    error.loop_late = deadline.loop_late
                    exchange.error = error
        finally:
            for exchange in exchanges:
                await self._settle(exchange)
        # A timeout of a late loop says nothing about the server's health.
        self._healthy = all(e.done or _loop_late(e.error) for e in exchanges)
        for exchange in exchanges:
            for i, reply in zip(exchange.indices, exchange.results(), strict=True):
                results[i] = reply
        return results

    async def _open(self, exchange: _Exchange) -> None:
        try:
            exchange.conn = await self._checkout(exchange.pool)
        except redis_py.CLIENT_ERRORS as exc:
            exchange.error = _as_store_error(exc)

    async def _write(self, items: list[Item], exchange: _Exchange) -> None:
        commands = [items[i][0] for i in exchange.indices]
        try:
            await redis_py.send(exchange.conn, redis_py.pack(exchange.conn, commands))
        except redis_py.CLIENT_ERRORS as exc:
            await self._fail(exchange, exc)

    async def _read(self, items: list[Item], exchange: _Exchange, retried: bool = False) -> None:
        """Read ``exchange``'s replies; a kept socket the server had closed is retried once.

        A connection error before any reply was read means the server closed this
        socket (restart, failover, idle timeout) before answering anything; its idle
        siblings are as dead, so they are dropped, and the commands are sent once more
        on a fresh connection. After some replies, the error is final: those commands
        ran (no retry).
        """
        try:
            await redis_py.read_replies(exchange.conn, len(exchange.indices), exchange.replies)
        except redis_py.ConnectionError as exc:
            if exchange.replies or retried:
                await self._fail(exchange, exc)
                return
            await self._drop(exchange)
            await self._drop_idle(exchange.pool)
            await self._open(exchange)
            if exchange.conn is not None:
                await self._write(items, exchange)
            if exchange.conn is not None:
                await self._read(items, exchange, retried=True)
            return
        except redis_py.CLIENT_ERRORS as exc:
            await self._fail(exchange, exc)
            return
        exchange.done = True

    async def _fail(self, exchange: _Exchange, exc: BaseException) -> None:
        exchange.error = _as_store_error(exc)
        await self._drop(exchange)

    async def _drop(self, exchange: _Exchange) -> None:
        """Drop ``exchange``'s connection: a reply may be left unread in it."""
        conn, exchange.conn = exchange.conn, None
        if conn is not None:
            await redis_py.drop(conn)
            await redis_py.release(exchange.pool, conn)

    async def _settle(self, exchange: _Exchange) -> None:
        """After the deadline: keep a connection that answered everything, drop the rest."""
        conn, exchange.conn = exchange.conn, None
        if not exchange.done and not _loop_late(exchange.error):  # the server failed
            self.servers.failed(exchange.pool)
            await self._drop_idle(exchange.pool)
        if conn is None:
            return
        if not exchange.done:
            await redis_py.drop(conn)
            await redis_py.release(exchange.pool, conn)
        elif self.servers.owns(exchange.pool):
            self._idle.setdefault(exchange.pool, []).append(conn)
        else:  # close() ran meanwhile: the connection belongs to a pool that is gone
            await redis_py.release(exchange.pool, conn)

    async def _checkout(self, pool: redis_py.Pool) -> Any:
        """A connection kept from an earlier pipeline, else one from the pool.

        Checking out of redis-py's pool takes a lock, a condition, a timer and a
        liveness probe, as much CPU as the pipeline it is for, so the link keeps the
        connections it used. They still come from the pool (``max_connections``
        bounds them), and each pipeline holds one of the link's slots.
        """
        idle = self._idle.get(pool)
        if idle:
            return idle.pop()
        return await redis_py.get_connection(pool)

    async def _drop_idle(self, pool: redis_py.Pool) -> None:
        """Disconnect every connection of ``pool`` not in use (the kept ones, the pool's)."""
        for conn in self._idle.pop(pool, []):
            await redis_py.drop(conn)
            await redis_py.release(pool, conn)
        try:
            with _ERRORS:
                await redis_py.disconnect_idle(pool)
        except StoreError:
            pass  # they were dead already

    async def _take_slot(self) -> asyncio.Semaphore:
        """One of ``max_connections`` slots: a pipeline past them waits, up to ``pool_timeout``.

        The slots also keep a ``BlockingConnectionPool`` from ever waiting inside
        ``get_connection``, whose bound is the connect timeout.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        slots = self._slots
        if not slots.locked():
            await slots.acquire()
            return slots
        try:
            async with asyncio.timeout(self._pool_timeout):
                await slots.acquire()
        except TimeoutError:
            raise StoreTimeout(f"no free redis connection within {self._pool_timeout}s") from None
        return slots


def _as_store_error(exc: BaseException) -> StoreError:
    error = _to_store_error(exc)
    if isinstance(error, StoreError):
        return error
    return StoreError(f"redis failed: {type(exc).__name__} {exc}")


def _loop_late(error: StoreError | None) -> bool:
    return isinstance(error, StoreTimeout) and error.loop_late


def _any_reply_waiting(exchanges: list[_Exchange]) -> bool:
    return any(e.conn is not None and redis_py.reply_waiting(e.conn) for e in exchanges)


def _one_per_waiter(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one waiter (tracebacks differ); a bug stays what it is."""
    if isinstance(exc, StoreError):
        err = type(exc)(*exc.args)
        err.__cause__ = exc.__cause__
        if isinstance(exc, StoreTimeout) and isinstance(err, StoreTimeout):
            err.loop_late = exc.loop_late
        return err
    if isinstance(exc, Exception):
        return exc
    return StoreError(f"redis call abandoned: {exc!r}")
