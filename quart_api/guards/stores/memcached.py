"""memcached cache store: aiomcache pools, our timeouts, keys spread by rendezvous hashing.

Capability: get / set / add (only-if-absent, the cross-process lock) / delete /
incr (created at 1 when missing) with whole-second TTLs, over one or more servers.
Each key lives on one server, chosen by rendezvous (highest random weight) hashing
of the key bytes with BLAKE2b: stable across processes and restarts, and adding or
removing a server moves only the keys that server wins or held.

aiomcache is used for its connection pool: one ``MemcachePool`` per server (the pool
an ``aiomcache.Client`` wraps; the client itself adds nothing we use). Each gap below
is a failure mode of aiomcache 0.8 (the range ``pyproject.toml`` allows), handled here:

- no timeouts: every call is bounded, ``connect_timeout`` for getting a connection
  (opening one, or waiting for a busy pool), ``timeout`` for the command itself,
  counted from when it is written and not charged to the server for a reply that a
  busy event loop has not read yet (``_deadline.Deadline``);
- its ``acquire`` wrapper returns a connection to the pool after a timeout or a
  cancellation with the late reply unread, so the next caller would read the
  previous caller's answer: we take connections from the pool ourselves and
  CLOSE (never reuse) any connection whose call did not finish cleanly
  (``_aiomcache_adapter.discard``: the pool has no public way to);
- its one-line replies are read by a loop that spins forever, never yielding, when
  the server closes the socket (``readline`` returns ``b""`` at EOF), freezing the
  event loop; the undecorated ``get`` validates every key a second time. So the
  few commands we need are written here (a small part of the text protocol),
  and a socket closed before any reply byte is told apart, so the command can be
  resent once on a fresh connection (a pooled socket left over from a restart);
- its pool queue lets a caller that just released a connection take it straight back,
  ahead of callers already waiting, so under load some calls starve: a FIFO
  semaphore per server hands the connections out in order;
- it validates key length in characters, not bytes: keys are checked in bytes
  (:func:`check_cache_key`, a ``ValueError``: a bug, not an outage).

Values over ``max_item_bytes`` are skipped (``set`` returns False) without a round
trip. Every client error leaves through one :class:`ErrorMap` as :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..config import (
    CONNECT_TIMEOUT,
    LATE_LOOP_GRACE,
    MEMCACHED_POOL_SIZE,
    STORE_TIMEOUT,
    parse_servers,
)
from . import _aiomcache_adapter as aiomcache
from ._aiomcache_adapter import ClientException, Connection
from ._deadline import Deadline
from ._get_batch import GetBatcher
from .base import CacheStore, ErrorMap, StoreError, StoreTimeout, check_cache_key

__all__ = ["MemcachedCacheStore"]

T = TypeVar("T")

# Everything the pool and the stream under it can raise. ValueError comes from
# parsing a garbled reply; our own key checks run outside this choke point.
_ERRORS = ErrorMap(
    "memcached",
    (ClientException, OSError, EOFError, asyncio.LimitOverrunError, ValueError),
)

_THIRTY_DAYS = 30 * 24 * 3600  # memcached reads a larger exptime as a unix timestamp


class _Stale(ConnectionResetError):
    """The socket was closed before any byte of the reply: the command can be resent."""


# --- the text protocol, one coroutine per command shape --------------------------------
# Each takes a connection that is ours alone for the call and leaves it in step (every
# reply byte read) or raises; the caller then closes the connection.


async def _reply(conn: Connection) -> bytes:
    """The first reply line, without CRLF. EOF or a reset before it is :class:`_Stale`."""
    try:
        line = await conn.reader.readline()
    except ConnectionResetError as exc:
        raise _Stale(str(exc)) from exc
    if not line:
        raise _Stale("memcached closed the connection")
    if not line.endswith(b"\r\n"):
        raise ConnectionResetError("memcached closed the connection mid-reply")
    return line[:-2]


async def _get(conn: Connection, key: bytes) -> bytes | None:
    conn.writer.write(b"get %b\r\n" % key)
    line = await _reply(conn)
    if line == b"END":
        return None
    head = line.split()
    if len(head) < 4 or head[0] != b"VALUE" or head[1] != key:
        raise ClientException("memcached get failed", line)
    data = await conn.reader.readexactly(int(head[3]) + 2)
    end = await conn.reader.readline()
    if data[-2:] != b"\r\n" or end != b"END\r\n":
        raise ClientException("memcached get: malformed reply", end)
    return data[:-2]


async def _get_many(conn: Connection, keys: list[bytes]) -> dict[bytes, bytes]:
    """One ``get k1 k2 ...``: the values found (missing keys are simply absent)."""
    conn.writer.write(b"get %b\r\n" % b" ".join(keys))
    wanted = set(keys)
    found: dict[bytes, bytes] = {}
    while True:
        line = await _reply(conn)
        if line == b"END":
            return found
        head = line.split()
        if len(head) < 4 or head[0] != b"VALUE" or head[1] not in wanted:
            raise ClientException("memcached get failed", line)
        data = await conn.reader.readexactly(int(head[3]) + 2)
        if data[-2:] != b"\r\n":
            raise ClientException("memcached get: malformed reply", head[1])
        found[head[1]] = data[:-2]


async def _simple(conn: Connection, command: bytes) -> bytes:
    conn.writer.write(command)
    return await _reply(conn)


async def _store(conn: Connection, verb: bytes, key: bytes, value: bytes, exptime: int) -> bool:
    conn.writer.write(b"%b %b 0 %d %d\r\n" % (verb, key, exptime, len(value)))
    conn.writer.write(value)
    conn.writer.write(b"\r\n")
    if len(value) > 65536:
        await conn.writer.drain()
    reply = await _reply(conn)
    if reply == b"STORED":
        return True
    if reply == b"NOT_STORED":
        return False
    raise ClientException(f"memcached {verb.decode()} failed", reply)


async def _incr_or_create(conn: Connection, key: bytes, exptime: int) -> int:
    """``incr`` does not create: on NOT_FOUND ``add`` "1"; if another add won, incr again."""
    for _ in range(3):
        reply = await _simple(conn, b"incr %b 1\r\n" % key)
        if reply.isdigit():
            return int(reply)
        if reply != b"NOT_FOUND":
            raise ClientException("memcached incr failed", reply)
        if await _store(conn, b"add", key, b"1", exptime):
            return 1
    raise ClientException("memcached incr: the counter kept vanishing", key)


class _Server:
    """One memcached server: aiomcache's connection pool (what an ``aiomcache.Client``
    holds), opened ``size`` connections at a time, behind a fair gate of as many seats."""

    __slots__ = ("gate", "pool")

    def __init__(self, host: str, port: int, size: int) -> None:
        self.pool = aiomcache.new_pool(host, port, size)
        self.gate = asyncio.Semaphore(size)


class MemcachedCacheStore(CacheStore):
    """A byte cache over one or more memcached servers (see the module docstring).

    Args:
        servers: ``"host:port[,host:port...]"`` or a list of ``(host, port)``.
        timeout: bound in seconds on one command (``STORE_TIMEOUT``).
        connect_timeout: bound on getting a connection (open, or wait for a free one).
        pool_size: connections per server.
        late_grace: how long past ``timeout`` a call may wait for a reply that has
            arrived but that a busy event loop has not read yet.
        max_item_bytes: largest value sent; memcached's 1 MiB item also holds the
            key and the item header, hence the margin.
    """

    kind = "memcached"

    def __init__(
        self,
        servers: str | Sequence[tuple[str, int]],
        *,
        timeout: float = STORE_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        pool_size: int = MEMCACHED_POOL_SIZE,
        max_item_bytes: int = 1024 * 1024 - 1024,
        late_grace: float = LATE_LOOP_GRACE,
    ) -> None:
        self.servers = parse_servers(servers)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._late_grace = late_grace
        self.max_item_bytes = max_item_bytes
        # One BLAKE2b state per server, primed with its name; a key's weight on that
        # server is the digest after feeding the key (copy + update: no per-call setup).
        self._weights = [
            hashlib.blake2b(f"{h}:{p}|".encode(), digest_size=8) for h, p in self.servers
        ]
        self._servers: list[_Server] | None = None
        self._batch: GetBatcher[_Server] = GetBatcher(self._fetch)

    @property
    def gets(self) -> int:
        """Keys fetched from the servers: a cache hit costs at most one (shared when hot)."""
        return self._batch.keys_fetched

    @property
    def get_round_trips(self) -> int:
        """``get`` commands sent: one per server per loop turn with lookups."""
        return self._batch.fetches

    # --- routing and the one call path ---------------------------------------------

    def _all(self) -> list[_Server]:
        if self._servers is None:
            self._servers = [_Server(host, port, self._pool_size) for host, port in self.servers]
        return self._servers

    def server_index(self, key: bytes) -> int:
        """Which server holds ``key``: the one whose weight for it is highest."""
        if len(self._weights) == 1:
            return 0
        best, best_weight = 0, b""
        for i, base in enumerate(self._weights):
            h = base.copy()
            h.update(key)
            weight = h.digest()
            if weight > best_weight:
                best, best_weight = i, weight
        return best

    async def _call(self, server: _Server, op: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``op(conn, *args)`` on a pooled connection, bounded; close it unless it finished.

        ``connect_timeout`` bounds getting the connection (a fair FIFO gate, then the
        pool: aiomcache's queue lets a releasing caller barge ahead of the waiters, so
        under load some would starve), ``timeout`` the command. A pooled socket that
        the server closed while idle (a restart) fails before any reply: the idle
        sockets of that pool are dropped and the command is sent once more on a
        fresh one, within the same deadline.
        """
        pool = server.pool
        in_use: list[Connection] = []
        deadline = Deadline(
            self._connect_timeout,
            delivered=lambda: any(aiomcache.reply_waiting(c) for c in in_use),
            grace=self._late_grace,
        )
        try:
            with _ERRORS:
                async with deadline:
                    await server.gate.acquire()
                    try:
                        conn = await aiomcache.acquire(pool)
                        in_use[:] = [conn]
                        deadline.reschedule(
                            asyncio.get_running_loop().time() + self._timeout, self._timeout
                        )
                        try:
                            return await self._on(server, conn, op, args)
                        except _Stale:
                            await aiomcache.clear(pool)
                            conn = await aiomcache.acquire(pool)
                            in_use[:] = [conn]
                            return await self._on(server, conn, op, args)
                    finally:
                        server.gate.release()
        except StoreTimeout as error:
            error.loop_late = deadline.loop_late
            raise

    async def _on(
        self, server: _Server, conn: Connection, op: Callable[..., Awaitable[T]], args: Any
    ) -> T:
        pool = server.pool
        try:
            result = await op(conn, *args)
        except BaseException:  # its reply may still be on the way: never reuse it
            aiomcache.discard(pool, conn)
            raise
        servers = self._servers
        if servers is not None and server in servers:
            aiomcache.release(pool, conn)
        else:  # the store was closed meanwhile: do not leave it in an orphaned pool
            aiomcache.discard(pool, conn)
        return result

    def _route(self, key: bytes) -> _Server:
        check_cache_key(key)
        return self._all()[self.server_index(key)]

    # --- the cache interface -----------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        """Batched with the other lookups of this loop turn (see ``_get_batch``)."""
        return await self._batch.get(self._route(key), key)

    def get_soon(self, key: bytes) -> asyncio.Future[bytes | None]:
        """``get``, already queued in this loop turn's batch (cancel it to drop it)."""
        return self._batch.get(self._route(key), key)

    async def _fetch(self, server: _Server, keys: list[bytes]) -> dict[bytes, bytes]:
        if len(keys) == 1:
            value = await self._call(server, _get, keys[0])
            return {} if value is None else {keys[0]: value}
        return await self._call(server, _get_many, keys)

    async def set(self, key: bytes, value: bytes, ttl: int) -> bool:
        server = self._route(key)
        exptime = _exptime(ttl)
        if len(value) > self.max_item_bytes:
            return False
        return await self._call(server, _store, b"set", key, value, exptime)

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        server = self._route(key)
        exptime = _exptime(ttl)
        if len(value) > self.max_item_bytes:
            return False
        return await self._call(server, _store, b"add", key, value, exptime)

    async def delete(self, key: bytes) -> bool:
        server = self._route(key)
        reply = await self._call(server, _simple, b"delete %b\r\n" % key)
        if reply not in (b"DELETED", b"NOT_FOUND"):
            raise StoreError(f"memcached delete failed: {reply!r}")
        return reply == b"DELETED"

    async def incr(self, key: bytes, ttl: int = 0) -> int:
        """Add one; a missing counter starts at 1 with ``ttl`` (an existing one keeps its TTL)."""
        server = self._route(key)
        return await self._call(server, _incr_or_create, key, _exptime(ttl))

    async def clear(self) -> None:
        """``flush_all`` on every server."""
        for server in self._all():
            reply = await self._call(server, _simple, b"flush_all\r\n")
            if reply != b"OK":
                raise StoreError(f"memcached flush_all failed: {reply!r}")

    async def ping(self) -> None:
        """``version`` on every server: each must answer."""
        for server in self._all():
            reply = await self._call(server, _simple, b"version\r\n")
            if not reply.startswith(b"VERSION"):
                raise StoreError(f"memcached version failed: {reply!r}")

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        """Close idle connections; the next call opens new ones."""
        servers, self._servers = self._servers, None
        for server in servers or ():
            # Calls in flight close their own connection when done.
            await aiomcache.clear(server.pool)


def _exptime(ttl: int) -> int:
    if ttl < 0:
        raise ValueError(f"cache ttl must be >= 0 seconds, got {ttl!r}")
    return ttl if ttl <= _THIRTY_DAYS else int(time.time()) + ttl
