"""How :class:`RedisCounterStore` talks to Redis: bounded pipelines, one per loop tick.

Private to ``redis.py``, split off so each file reads in one sitting. This is the
only place that touches redis-py connections, and the only place client errors are
mapped (:func:`_map_errors`): everything above it sees results or ``StoreError``.

Three bounds, kept apart on purpose: waiting for a free connection is not an outage
(a burst must queue, never slip through a fail-open limit), so it waits up to
``pool_timeout``; opening a connection is bounded by ``connect_timeout``; the commands
by ``timeout``. A connection whose reply was cut off is disconnected, never reused.
"""

from __future__ import annotations

import asyncio
import hashlib
from importlib import resources
from typing import Any

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster

from ._deadline import Deadline
from .base import ErrorMap, StoreError, StoreTimeout

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _hiredis_pack = None  # type: ignore[assignment]

__all__ = ["CHECK", "FAIL", "REFUND", "RELEASE", "Command", "RedisLink"]

Command = tuple[Any, ...]


class _Script:
    """A Lua file of ``quart_api/guards/lua``, with the SHA1 that ``EVALSHA`` takes."""

    def __init__(self, name: str) -> None:
        self.source = resources.files("quart_api.guards").joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest().encode()  # noqa: S324
        self.load: Command = ("SCRIPT", "LOAD", self.source)


def _pack(conn: Any, commands: list[Command]) -> bytes | list[bytes]:
    """RESP bytes of ``commands``: hiredis packs in C, about 5x faster than redis-py's loop."""
    if _hiredis_pack is None:
        return conn.pack_commands(commands)
    return b"".join(map(_hiredis_pack, commands))


CHECK = _Script("check")
FAIL = _Script("fail")
REFUND = _Script("refund")
RELEASE = _Script("release")
_LOADS = (CHECK.load, FAIL.load, REFUND.load, RELEASE.load)

# Everything redis-py (and the sockets under it) can raise. Exception roots of
# redis.exceptions that do not derive from RedisError are listed on their own;
# a test walks that module so a new root cannot slip past.
_ERRORS = ErrorMap(
    "redis",
    (
        rx.RedisError,
        rx.RedisClusterException,
        rx.ChildDeadlockedError,
        rx.IncorrectPolicyType,
        OSError,
        EOFError,
    ),
    (rx.TimeoutError,),
)
_to_store_error = _ERRORS.convert


def _map_errors() -> ErrorMap:
    """The single choke point for redis errors (fail-open and the breaker build on it)."""
    return _ERRORS


class RedisLink:
    """Connections to one Redis or Redis Cluster, and the per-tick batcher.

    ``cluster_nodes`` (startup nodes, credentials) selects cluster mode; otherwise
    ``url`` feeds a ``BlockingConnectionPool``. Nothing connects until the first call.
    """

    def __init__(
        self,
        url: str,
        cluster_nodes: tuple[list[tuple[str, int]], dict[str, str]] | None,
        *,
        timeout: float,
        connect_timeout: float,
        pool_timeout: float,
        max_connections: int,
        batch: bool,
    ) -> None:
        self._url = url
        self._cluster_nodes = cluster_nodes
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._max_connections = max_connections
        self.batch = batch
        # Standalone packs bytes as they are; the cluster client routes on str names.
        self.evalsha: str | bytes = b"EVALSHA" if cluster_nodes is None else "EVALSHA"
        #: network round trips made (pipelines sent; per node in a cluster pipeline: 1).
        self.round_trips = 0
        self._pool: BlockingConnectionPool | None = None
        self._cluster: RedisCluster | None = None
        # None: nothing sent since start-up or close(); then whether the last call worked.
        # Opening connections is allowed connect_timeout only while nothing says the
        # server is in trouble: against a frozen server every request would pay it.
        self._healthy: bool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._cluster_lock: asyncio.Lock | None = None
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        #: connections between pipelines, kept out of the pool (see ``_checkout``)
        self._idle: list[Any] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Drop every connection; the next call reconnects."""
        pool, cluster = self._pool, self._cluster
        self._pool = self._cluster = None
        self._idle = []  # the pool's aclose below disconnects them with the others
        self._slots = self._cluster_lock = None
        self._healthy = None
        self._flush_loop = None
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(StoreError("redis store closed"))
        self._queue = []
        try:
            with _map_errors():
                if pool is not None:
                    await pool.aclose()
                if cluster is not None:
                    await cluster.aclose()
        except StoreError:
            pass  # closing a dead connection cannot fail in a way that matters

    async def call(self, command: Command) -> Any:
        """One command's reply (batched with this tick's other calls when enabled)."""
        if self.batch:
            return await self.submit(command)
        return (await self.commands([command]))[0]

    def submit(self, command: Command) -> asyncio.Future[Any]:
        """Queue ``command`` for this tick's pipeline; the first caller schedules the flush."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._flush_loop is not loop:
            if self._flush_loop is not None:
                self._queue = []  # queued on a loop that is gone: nobody awaits them
            self._flush_loop = loop
            loop.call_soon(self._flush)
        self._queue.append((command, fut))
        return fut

    def _flush(self) -> None:
        self._flush_loop = None
        batch = [item for item in self._queue if not item[1].done()]  # skip cancelled callers
        self._queue = []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute([command for command, _ in batch])
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    err: BaseException = exc  # a bug (not a client error) stays what it is
                    if isinstance(exc, StoreError):  # one instance per waiter: tracebacks differ
                        err = type(exc)(*exc.args)
                        err.__cause__ = exc.__cause__
                    elif not isinstance(exc, Exception):
                        err = StoreError(f"redis call abandoned: {exc!r}")
                    fut.set_exception(err)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                if isinstance(result, BaseException):
                    fut.set_exception(_to_store_error(result))
                else:
                    fut.set_result(result)

    async def commands(self, commands: list[Command]) -> list[Any]:
        """Run ``commands`` in one pipeline now; raise the first per-command error."""
        results = await self._execute(commands)
        for result in results:
            if isinstance(result, BaseException):
                raise _to_store_error(result)
        return results

    async def _execute(self, commands: list[Command]) -> list[Any]:
        """One pipeline; commands that met ``NOSCRIPT`` are resent once after a reload."""
        results = await self._run(commands)
        retry = [i for i, r in enumerate(results) if isinstance(r, rx.NoScriptError)]
        if retry:
            loads = len(_LOADS)
            again = await self._run([*_LOADS, *(commands[i] for i in retry)], loads)
            for loaded in again[:loads]:
                if isinstance(loaded, BaseException):
                    raise _to_store_error(loaded)
            for i, result in zip(retry, again[loads:], strict=True):
                results[i] = result
        return results

    async def _run(self, commands: list[Command], loads: int = 0) -> list[Any]:
        """Send ``commands`` as one pipeline; per-command errors come back in place.

        The first ``loads`` commands are ``SCRIPT LOAD`` (sent to every cluster master;
        their replies come back first, like the others').
        """
        slots, pool = self._connection_slots()
        await self._take_slot(slots)
        try:
            if pool is None:
                results = await self._run_cluster(commands, loads)
            else:
                results = await self._run_standalone(pool, commands)
        except BaseException:
            self._healthy = False
            raise
        finally:
            slots.release()
        self._healthy = True
        return results

    async def _run_standalone(
        self, pool: BlockingConnectionPool, commands: list[Command]
    ) -> list[Any]:
        loop = asyncio.get_running_loop()
        connect_bound = self._timeout if self._healthy is False else self._connect_timeout
        with _map_errors():
            async with Deadline(connect_bound) as deadline:
                conn = await self._checkout(pool)
                deadline.reschedule(loop.time() + self._timeout)
                try:
                    return await self._exchange(pool, conn, commands)
                except rx.ConnectionError:
                    # The server closed this socket (restart, failover, idle timeout)
                    # before answering anything; its idle siblings are as dead.
                    await self._drop_idle(pool)
                    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
                    return await self._exchange(pool, conn, commands)

    async def _checkout(self, pool: BlockingConnectionPool) -> Any:
        """A connection kept from an earlier pipeline, else one from the pool.

        Checking out of redis-py's pool takes a lock, a condition, a timer and a
        liveness probe, as much CPU as the pipeline it is for, so the link keeps the
        connections it used. They still come from the pool (``max_connections``
        bounds them) and each in use holds a slot. A kept socket the server has
        closed fails before any reply is read: the caller then drops every kept
        connection and retries once on a fresh one, as for a stale pooled socket.
        """
        if self._idle:
            return self._idle.pop()
        return await pool.get_connection()  # type: ignore[no-untyped-call]

    async def _drop_idle(self, pool: BlockingConnectionPool) -> None:
        """Disconnect every connection not in use (the link's kept ones, the pool's)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)
            await pool.release(conn)
        await pool.disconnect(inuse_connections=False)

    async def _exchange(
        self, pool: BlockingConnectionPool, conn: Any, commands: list[Command]
    ) -> list[Any]:
        """Send one pipeline on ``conn`` and read every reply.

        Any failure disconnects ``conn`` and gives it back to the pool: a reply may
        be left unread, and the next user of the socket would read it as its own. A
        connection error after some replies were read is final (those commands ran:
        no retry). A connection that answered everything is kept (``_checkout``).
        """
        out: list[Any] = []
        try:
            self.round_trips += 1
            await conn.send_packed_command(_pack(conn, commands), False)
            for _ in commands:
                try:
                    out.append(await conn.read_response())
                except rx.ResponseError as exc:  # a whole reply was read: still in step
                    out.append(exc)
        except BaseException as exc:
            await conn.disconnect(nowait=True)
            await pool.release(conn)
            if out and isinstance(exc, rx.ConnectionError):
                raise _to_store_error(exc) from None
            raise
        if pool is self._pool:
            self._idle.append(conn)
        else:  # close() ran meanwhile: the connection belongs to a pool that is gone
            await pool.release(conn)
        return out

    async def _run_cluster(self, commands: list[Command], loads: int) -> list[Any]:
        cluster = await self.cluster_client()
        # The cluster client opens node connections inside the call: the first call
        # after start-up may take connect_timeout longer (not so after a failure).
        bound = self._timeout + (self._connect_timeout if self._healthy is None else 0)
        with _map_errors():
            async with Deadline(bound):
                loaded = [  # on every master: any of them may run the script
                    await cluster.execute_command(
                        "SCRIPT LOAD", load[-1], target_nodes=RedisCluster.PRIMARIES
                    )
                    for load in commands[:loads]
                ]
                pipe = cluster.pipeline(transaction=False)
                for command in commands[loads:]:
                    pipe.execute_command(*command)
                self.round_trips += 1
                results = await pipe.execute(raise_on_error=False)
        return loaded + results

    async def on_node(self, node: Any, command: Command) -> Any:
        """One command on one server (``node`` is a cluster node, or None standalone)."""
        if node is None:
            return (await self.commands([command]))[0]
        slots, _ = self._connection_slots()
        await self._take_slot(slots)
        try:
            with _map_errors():
                async with Deadline(self._timeout):
                    self.round_trips += 1
                    return await node.execute_command(*command)
        finally:
            slots.release()

    async def targets(self) -> list[Any]:
        if self._cluster_nodes is None:
            return [None]
        return list((await self.cluster_client()).get_primaries())

    # --- connections ---------------------------------------------------------------

    def _connection_slots(self) -> tuple[asyncio.Semaphore, BlockingConnectionPool | None]:
        """One slot per connection: a call past ``max_connections`` waits for a slot.

        Standalone, the slots also keep the ``BlockingConnectionPool`` from ever
        waiting inside ``get_connection``, whose bound is the connect timeout.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
            if self._cluster_nodes is None:
                self._pool = BlockingConnectionPool.from_url(
                    self._url,
                    max_connections=self._max_connections,
                    timeout=self._pool_timeout,
                    socket_connect_timeout=self._connect_timeout,
                    # Our own deadlines bound every read; redis-py's default 5 s socket
                    # timeout would add a timer per reply for nothing.
                    socket_timeout=None,
                    # No CLIENT SETINFO round trip on connect: a new connection is a
                    # TCP connect only (plus AUTH/SELECT when the URL asks for them).
                    driver_info=None,
                )
        return self._slots, self._pool

    async def _take_slot(self, slots: asyncio.Semaphore) -> None:
        if not slots.locked():
            await slots.acquire()
            return
        try:
            async with asyncio.timeout(self._pool_timeout):
                await slots.acquire()
        except TimeoutError:
            raise StoreTimeout(f"no free redis connection within {self._pool_timeout}s") from None

    async def cluster_client(self) -> RedisCluster:
        if self._cluster is not None:
            return self._cluster
        if self._cluster_lock is None:
            self._cluster_lock = asyncio.Lock()
        async with self._cluster_lock:
            if self._cluster is None and self._cluster_nodes is not None:
                nodes, auth = self._cluster_nodes
                cluster = RedisCluster(
                    startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                    max_connections=self._max_connections,
                    socket_connect_timeout=self._connect_timeout,
                    socket_timeout=None,
                    driver_info=None,
                    **auth,  # type: ignore[arg-type]
                )
                try:
                    with _map_errors():
                        async with asyncio.timeout(self._connect_timeout):
                            await cluster.initialize()
                except BaseException:
                    await cluster.aclose()
                    raise
                self._cluster = cluster
        if self._cluster is None:
            raise StoreError("redis cluster store used without cluster nodes")
        return self._cluster
