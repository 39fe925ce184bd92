"""Redis counter store: every check of a request in one Lua script, one round trip.

Capability: atomic check-and-charge of several GCRA limits plus ban reads
(``check.lua``, all-or-nothing) and failure counting with escalating bans
(``fail.lua``), shared by every worker and host that uses the same Redis.
URLs: ``redis://``, ``rediss://``, ``unix://`` and ``redis+cluster://h1:p1,h2:p2``.

Speed: scripts are called by SHA (``EVALSHA``) and reloaded by themselves after
``NOSCRIPT`` (a restart or failover). With ``batch=True`` the calls made in one
event-loop tick by concurrent requests go out as ONE pipeline, so under load a
request costs well under one round trip (``round_trips / calls`` measures it).

Bounds, kept apart on purpose: waiting for a free connection is not an outage (a
burst must queue, never slip through a fail-open limit), so it waits up to
``pool_timeout``; opening a connection is bounded by ``connect_timeout``; the
commands themselves by ``timeout``. A connection whose reply was cut off is
disconnected, never reused. Every client error leaves through :func:`_map_errors`
as :class:`StoreError` (:class:`StoreTimeout` for timeouts).

Cluster: the keys of one script call must share a hash slot, so a request's keys
are grouped by slot and each group is one script call (same pipeline). The
all-or-nothing rule holds within a group; give the keys of one request a common
``{hash tag}`` to make it hold across the whole request. The two or three keys of
one ban (``BanCheck``, ``Failure``) must share a slot (``ValueError`` otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from ..errors import ConfigurationError
from .base import (
    BanCheck,
    BanState,
    CheckResult,
    CounterStore,
    ErrorMap,
    Failure,
    Limit,
    LimitState,
    StoreError,
    StoreTimeout,
    gcra_costs,
    validate_failure,
)

__all__ = ["RedisCounterStore"]

SCHEMES = ("redis", "rediss", "unix", "redis+cluster")

Command = tuple[Any, ...]


class _Script:
    """A Lua file of ``quart_api/guards/lua``, with the SHA1 that ``EVALSHA`` takes."""

    def __init__(self, name: str) -> None:
        self.source = resources.files("quart_api.guards").joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest().encode()  # noqa: S324
        self.load: Command = ("SCRIPT LOAD", self.source)


CHECK = _Script("check")
FAIL = _Script("fail")

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
    """The single choke point of this module (fail-open and the breaker build on it)."""
    return _ERRORS


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """``redis+cluster://[user:password@]h1:p1,h2:p2`` -> startup nodes and credentials."""
    rest = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hosts = rest.rpartition("@")
    shown = url.replace(userinfo + "@", "***@") if userinfo else url
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"REDIS_URL {shown!r}: {part!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    auth = {}
    if userinfo:
        user, sep, password = userinfo.partition(":")
        auth = {"username": user, "password": password} if sep else {"password": user}
        auth = {k: v for k, v in auth.items() if v}
    return nodes, auth


def _decode_check(raw: list[int], n: int, m: int) -> CheckResult:
    end = 1 + 4 * n
    limits = tuple(
        LimitState(raw[i] == 1, raw[i + 1], raw[i + 2], raw[i + 3]) for i in range(1, end, 4)
    )
    bans = tuple(BanState(raw[i] == 1, raw[i + 1], raw[i + 2]) for i in range(end, end + 3 * m, 3))
    return CheckResult(raw[0] == 1, limits, bans)


class RedisCounterStore(CounterStore):
    """Counters in Redis or a Redis Cluster (see the module docstring).

    Args:
        url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://h1:p1,h2:p2``.
        timeout: bound in seconds on the commands of one call (``STORE_TIMEOUT``).
        max_connections: connections per server; more concurrent calls queue.
        batch: pipeline the calls of one event-loop tick into one round trip.
        key_prefix: prepended to every key (and to ``delete_matching`` patterns).
        connect_timeout: bound on opening a connection (cluster: on discovery).
        pool_timeout: bound on waiting for a free connection.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        max_connections: int = 64,
        batch: bool = True,
        key_prefix: str = "",
        connect_timeout: float = 0.5,
        pool_timeout: float = 5.0,
    ) -> None:
        scheme = url.partition("://")[0].lower()
        if scheme not in SCHEMES:
            raise ConfigurationError(f"REDIS_URL {url!r}: scheme must be one of {SCHEMES}")
        self._url = url
        self._cluster_nodes = parse_cluster_url(url) if scheme == "redis+cluster" else None
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._max_connections = max_connections
        self._batch = batch
        self._prefix = key_prefix
        # Standalone packs bytes as they are; the cluster client routes on str names.
        self._evalsha: str | bytes = b"EVALSHA" if self._cluster_nodes is None else "EVALSHA"
        #: script calls asked for (check / record_failure) and network round trips made.
        self.calls = 0
        self.round_trips = 0
        self._pool: BlockingConnectionPool | None = None
        self._cluster: RedisCluster | None = None
        self._slots: asyncio.Semaphore | None = None
        self._cluster_lock: asyncio.Lock | None = None
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._argv: dict[tuple[int, int, int, bool], tuple[bytes, ...]] = {}

    # --- the counter interface -------------------------------------------------

    async def check(self, limits: Sequence[Limit], bans: Sequence[BanCheck]) -> CheckResult:
        """Check and charge ``limits`` and read ``bans`` in one ``check.lua`` call."""
        if not limits and not bans:
            return CheckResult(True, (), ())
        self.calls += 1
        if self._cluster_nodes is None:
            raw = await self._call(self._check_command(limits, bans))
            return _decode_check(raw, len(limits), len(bans))
        return await self._check_by_slot(limits, bans)

    async def record_failure(self, failure: Failure) -> BanState:
        """Count one failure, ban at the limit: one ``fail.lua`` call."""
        validate_failure(failure)
        p = self._prefix
        keys = [p + failure.fail_key, p + failure.ban_key]
        if failure.offence_key is not None:
            keys.append(p + failure.offence_key)
        self._same_slot(keys)
        self.calls += 1
        raw = await self._call(
            (
                self._evalsha,
                FAIL.sha,
                len(keys),
                *keys,
                failure.limit,
                failure.window_ms,
                failure.max_ban_ms,
            )
        )
        return BanState(raw[0] == 1, raw[1], raw[2])

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._commands([("UNLINK", *g) for g in self._by_slot(keys)])

    async def delete_matching(self, pattern: str) -> int:
        """SCAN (every master of a cluster) and UNLINK the keys matching ``pattern``."""
        match = self._prefix + pattern
        deleted = 0
        for node in await self._scan_targets():
            cursor: Any = b"0"
            while True:
                scan = ("SCAN", cursor, "MATCH", match, "COUNT", 1000)
                cursor, found = await self._on_node(node, scan)
                if found:
                    unlinked = await self._commands([("UNLINK", *g) for g in self._by_slot(found)])
                    deleted += sum(unlinked)
                if int(cursor) == 0:
                    break
        return deleted

    async def ping(self) -> None:
        for node in await self._scan_targets():
            await self._on_node(node, ("PING",))

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        """Drop every connection; the next call reconnects."""
        pool, cluster = self._pool, self._cluster
        self._pool = self._cluster = None
        self._slots = self._cluster_lock = None
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

    # --- building script calls ---------------------------------------------------

    def _limit_argv(self, lim: Limit) -> tuple[bytes, ...]:
        spec = (lim.limit, lim.window_ms, lim.cost, lim.dry_run)
        argv = self._argv.get(spec)
        if argv is None:
            window_us, need_us, charge_us = gcra_costs(lim.limit, lim.window_ms, lim.cost)
            argv = tuple(
                str(v).encode()
                for v in (lim.limit, window_us, need_us, charge_us, int(lim.dry_run))
            )
            self._argv[spec] = argv
        return argv

    def _check_command(self, limits: Sequence[Limit], bans: Sequence[BanCheck]) -> Command:
        p = self._prefix
        keys = [p + lim.key for lim in limits]
        argv: list[bytes | int] = [len(limits)]
        for lim in limits:
            argv += self._limit_argv(lim)
        for ban in bans:
            keys += (p + ban.fail_key, p + ban.ban_key)
        return (self._evalsha, CHECK.sha, len(keys), *keys, *argv)

    async def _check_by_slot(
        self, limits: Sequence[Limit], bans: Sequence[BanCheck]
    ) -> CheckResult:
        p = self._prefix
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for i, lim in enumerate(limits):
            groups.setdefault(key_slot((p + lim.key).encode()), ([], []))[0].append(i)
        for j, ban in enumerate(bans):
            slot = self._same_slot([p + ban.fail_key, p + ban.ban_key])
            groups.setdefault(slot, ([], []))[1].append(j)
        parts = list(groups.values())
        commands = [
            self._check_command([limits[i] for i in li], [bans[j] for j in bi]) for li, bi in parts
        ]
        if self._batch:
            raws = await asyncio.gather(*(self._submit(c) for c in commands))
        else:
            raws = await self._commands(commands)
        limit_states: list[LimitState | None] = [None] * len(limits)
        ban_states: list[BanState | None] = [None] * len(bans)
        allowed = True
        for (li, bi), raw in zip(parts, raws, strict=True):
            part = _decode_check(raw, len(li), len(bi))
            allowed = allowed and part.allowed
            for i, state in zip(li, part.limits, strict=True):
                limit_states[i] = state
            for j, bstate in zip(bi, part.bans, strict=True):
                ban_states[j] = bstate
        return CheckResult(allowed, tuple(limit_states), tuple(ban_states))  # type: ignore[arg-type]

    def _same_slot(self, keys: list[str]) -> int:
        if self._cluster_nodes is None:
            return 0
        slots = {key_slot(k.encode()) for k in keys}
        if len(slots) > 1:
            raise ValueError(f"keys {keys!r} must share a Redis Cluster slot: use a {{hash tag}}")
        return slots.pop()

    def _by_slot(self, keys: Sequence[Any]) -> list[list[Any]]:
        if self._cluster_nodes is None:
            return [[self._prefix + k if isinstance(k, str) else k for k in keys]]
        groups: dict[int, list[Any]] = {}
        for k in keys:
            k = (self._prefix + k).encode() if isinstance(k, str) else k
            groups.setdefault(key_slot(k), []).append(k)
        return list(groups.values())

    # --- sending -------------------------------------------------------------------

    async def _call(self, command: Command) -> Any:
        if self._batch:
            return await self._submit(command)
        return (await self._commands([command]))[0]

    def _submit(self, command: Command) -> asyncio.Future[Any]:
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

    async def _commands(self, commands: list[Command]) -> list[Any]:
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
            again = await self._run([CHECK.load, FAIL.load, *(commands[i] for i in retry)], 2)
            for i, result in zip(retry, again, strict=True):
                results[i] = result
        return results

    async def _run(self, commands: list[Command], loads: int = 0) -> list[Any]:
        """Send ``commands`` as one pipeline; per-command errors come back in place.

        The first ``loads`` commands are ``SCRIPT LOAD`` (sent to every cluster master).
        """
        slots, pool = self._connection_slots()
        await self._take_slot(slots)
        try:
            if pool is None:
                return await self._run_cluster(commands, loads)
            return await self._run_standalone(pool, commands, loads)
        finally:
            slots.release()

    async def _run_standalone(
        self, pool: BlockingConnectionPool, commands: list[Command], loads: int
    ) -> list[Any]:
        loop = asyncio.get_running_loop()
        with _map_errors():
            async with asyncio.timeout(self._connect_timeout) as deadline:
                conn = await pool.get_connection()  # type: ignore[no-untyped-call]
                deadline.reschedule(loop.time() + self._timeout)
                try:
                    return (await self._exchange(pool, conn, commands))[loads:]
                except rx.ConnectionError:
                    # The server closed this pooled socket (restart, failover, idle
                    # timeout) before answering anything; its idle siblings are as dead.
                    await pool.disconnect(inuse_connections=False)
                    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
                    return (await self._exchange(pool, conn, commands))[loads:]

    async def _exchange(
        self, pool: BlockingConnectionPool, conn: Any, commands: list[Command]
    ) -> list[Any]:
        """Send one pipeline on ``conn`` and read every reply; always give ``conn`` back.

        Any failure disconnects ``conn`` first: a reply may be left unread, and the
        next user of the socket would read it as its own. A connection error after
        some replies were read is final (those commands ran: no retry).
        """
        out: list[Any] = []
        try:
            self.round_trips += 1
            await conn.send_packed_command(conn.pack_commands(commands), False)
            for _ in commands:
                try:
                    out.append(await conn.read_response())
                except rx.ResponseError as exc:  # a whole reply was read: still in step
                    out.append(exc)
            return out
        except BaseException as exc:
            await conn.disconnect(nowait=True)
            if out and isinstance(exc, rx.ConnectionError):
                raise _to_store_error(exc) from None
            raise
        finally:
            await pool.release(conn)

    async def _run_cluster(self, commands: list[Command], loads: int) -> list[Any]:
        cluster = await self._cluster_client()
        with _map_errors():
            async with asyncio.timeout(self._timeout):
                for load in commands[:loads]:  # every master: any of them may run the script
                    await cluster.execute_command(*load, target_nodes=RedisCluster.PRIMARIES)
                pipe = cluster.pipeline(transaction=False)
                for command in commands[loads:]:
                    pipe.execute_command(*command)
                self.round_trips += 1
                return await pipe.execute(raise_on_error=False)

    async def _on_node(self, node: Any, command: Command) -> Any:
        """One command on one server (``node`` is a cluster node, or None standalone)."""
        if node is None:
            return (await self._commands([command]))[0]
        slots, _ = self._connection_slots()
        await self._take_slot(slots)
        try:
            with _map_errors():
                async with asyncio.timeout(self._timeout):
                    self.round_trips += 1
                    return await node.execute_command(*command)
        finally:
            slots.release()

    async def _scan_targets(self) -> list[Any]:
        if self._cluster_nodes is None:
            return [None]
        return list((await self._cluster_client()).get_primaries())

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

    async def _cluster_client(self) -> RedisCluster:
        if self._cluster is not None:
            return self._cluster
        if self._cluster_lock is None:
            self._cluster_lock = asyncio.Lock()
        async with self._cluster_lock:
            if self._cluster is None:
                assert self._cluster_nodes is not None
                nodes, auth = self._cluster_nodes
                cluster = RedisCluster(
                    startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                    max_connections=self._max_connections,
                    socket_connect_timeout=self._connect_timeout,
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
        return self._cluster
