"""memcached cache store: aiomcache pools, our timeouts, keys spread by rendezvous hashing.

Capability: get / set / add (only-if-absent, the cross-process lock) / delete /
incr (created at 1 when missing) with whole-second TTLs, over one or more servers.
Each key lives on one server, chosen by rendezvous (highest random weight) hashing
of the key bytes with BLAKE2b: stable across processes and restarts, and adding or
removing a server moves only the keys that server wins or held.

aiomcache is used for what it does well (its per-server connection pool and the
``get`` parser, called undecorated through ``__wrapped__``). What it lacks is done
here, because each gap is a real failure mode:

- no timeouts: every call is bounded, ``connect_timeout`` for getting a connection
  (opening one, or waiting for a busy pool), ``timeout`` for the command itself;
- its ``acquire`` wrapper returns a connection to the pool after a timeout or a
  cancellation with the late reply unread, so the next caller would read the
  previous caller's answer: we acquire ourselves and CLOSE (never reuse) any
  connection whose call did not finish cleanly;
- its one-line replies are read by a loop that spins forever, without yielding, if
  the server closes the socket mid-reply: the one-line commands are written here;
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

import aiomcache
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

from ..errors import ConfigurationError
from .base import CacheStore, ErrorMap, StoreError, check_cache_key

__all__ = ["MemcachedCacheStore", "parse_servers"]

T = TypeVar("T")

# Everything aiomcache and the stream under it can raise. ValueError/IndexError come
# from parsing a garbled reply; our own key checks run outside this choke point.
_ERRORS = ErrorMap(
    "memcached",
    (ClientException, OSError, EOFError, asyncio.LimitOverrunError, ValueError, IndexError),
)

# aiomcache's own get parser, without its @acquire wrapper (we manage the connection).
_GET: Callable[[aiomcache.Client, Connection, bytes], Awaitable[bytes | None]] = (
    aiomcache.Client.get.__wrapped__  # type: ignore[attr-defined]
)
_THIRTY_DAYS = 30 * 24 * 3600  # memcached reads a larger exptime as a unix timestamp


def _map_errors() -> ErrorMap:
    """The single choke point of this module."""
    return _ERRORS


def parse_servers(servers: str | Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """``"h1:p1,h2:p2"`` (or pairs) -> ``[(host, port), ...]``, else ``ConfigurationError``."""
    if not isinstance(servers, str):
        pairs = [(str(host), int(port)) for host, port in servers]
    else:
        pairs = []
        for part in servers.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigurationError(
                    f"MEMCACHED_SERVERS {servers!r}: {part.strip()!r} is not host:port"
                )
            pairs.append((host.strip("[]"), int(port)))
    if not pairs or any(not host or not 0 < port < 65536 for host, port in pairs):
        raise ConfigurationError(f"MEMCACHED_SERVERS {servers!r}: need host:port[,host:port...]")
    return pairs


async def _line(conn: Connection) -> bytes:
    """One reply line without CRLF; a closed socket is an error, never an empty loop."""
    line = await conn.reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionResetError("memcached closed the connection mid-reply")
    return line[:-2]


async def _simple(conn: Connection, command: bytes) -> bytes:
    conn.writer.write(command)
    return await _line(conn)


async def _store(conn: Connection, verb: bytes, key: bytes, value: bytes, exptime: int) -> bool:
    conn.writer.write(b"%b %b 0 %d %d\r\n" % (verb, key, exptime, len(value)))
    conn.writer.write(value)
    conn.writer.write(b"\r\n")
    await conn.writer.drain()
    reply = await _line(conn)
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


class MemcachedCacheStore(CacheStore):
    """A byte cache over one or more memcached servers (see the module docstring).

    Args:
        servers: ``"host:port[,host:port...]"`` or a list of ``(host, port)``.
        timeout: bound in seconds on one command (``STORE_TIMEOUT``).
        connect_timeout: bound on getting a connection (open, or wait for a free one).
        pool_size: connections per server.
        max_item_bytes: largest value sent; memcached's 1 MiB item also holds the
            key and the item header, hence the margin.
    """

    kind = "memcached"

    def __init__(
        self,
        servers: str | Sequence[tuple[str, int]],
        *,
        timeout: float = 0.05,
        connect_timeout: float = 0.5,
        pool_size: int = 8,
        max_item_bytes: int = 1024 * 1024 - 1024,
    ) -> None:
        self.servers = parse_servers(servers)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self.max_item_bytes = max_item_bytes
        # One BLAKE2b state per server, primed with its name; a key's weight on that
        # server is the digest after feeding the key (copy + update: no per-call setup).
        self._weights = [
            hashlib.blake2b(f"{h}:{p}|".encode(), digest_size=8) for h, p in self.servers
        ]
        self._clients: list[aiomcache.Client] | None = None
        #: ``get`` commands sent (a cache hit must cost exactly one).
        self.gets = 0

    # --- routing and the one call path ---------------------------------------------

    def _all(self) -> list[aiomcache.Client]:
        if self._clients is None:
            self._clients = [
                aiomcache.Client(host, port, pool_size=self._pool_size)
                for host, port in self.servers
            ]
        return self._clients

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

    async def _call(
        self, client: aiomcache.Client, op: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """Run ``op(conn, *args)`` on a pooled connection, bounded; close it unless it finished."""
        pool = client._pool
        conn: Connection | None = None
        try:
            with _ERRORS:
                async with asyncio.timeout(self._connect_timeout) as deadline:
                    conn = await pool.acquire()
                    deadline.reschedule(asyncio.get_running_loop().time() + self._timeout)
                    result = await op(conn, *args)
        except BaseException:
            if conn is not None:  # its reply may still be on the way: never reuse it
                pool._in_use.discard(conn)  # _do_close alone would leak the pool slot
                pool._do_close(conn)
            raise
        clients = self._clients
        if clients is not None and client in clients:
            pool.release(conn)
        else:  # the store was closed meanwhile: do not leave it in an orphaned pool
            pool._in_use.discard(conn)
            pool._do_close(conn)
        return result

    def _route(self, key: bytes) -> aiomcache.Client:
        check_cache_key(key)
        return self._all()[self.server_index(key)]

    # --- the cache interface -----------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        client = self._route(key)
        self.gets += 1
        return await self._call(client, _get, client, key)

    async def set(self, key: bytes, value: bytes, ttl: int) -> bool:
        client = self._route(key)
        exptime = _exptime(ttl)
        if len(value) > self.max_item_bytes:
            return False
        return await self._call(client, _store, b"set", key, value, exptime)

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        client = self._route(key)
        exptime = _exptime(ttl)
        if len(value) > self.max_item_bytes:
            return False
        return await self._call(client, _store, b"add", key, value, exptime)

    async def delete(self, key: bytes) -> bool:
        client = self._route(key)
        reply = await self._call(client, _simple, b"delete %b\r\n" % key)
        if reply not in (b"DELETED", b"NOT_FOUND"):
            raise StoreError(f"memcached delete failed: {reply!r}")
        return reply == b"DELETED"

    async def incr(self, key: bytes, ttl: int = 0) -> int:
        """Add one; a missing counter starts at 1 with ``ttl`` (an existing one keeps its TTL)."""
        client = self._route(key)
        return await self._call(client, _incr_or_create, key, _exptime(ttl))

    async def clear(self) -> None:
        """``flush_all`` on every server."""
        for client in self._all():
            reply = await self._call(client, _simple, b"flush_all\r\n")
            if reply != b"OK":
                raise StoreError(f"memcached flush_all failed: {reply!r}")

    async def ping(self) -> None:
        """``version`` on every server: each must answer."""
        for client in self._all():
            reply = await self._call(client, _simple, b"version\r\n")
            if not reply.startswith(b"VERSION"):
                raise StoreError(f"memcached version failed: {reply!r}")

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        """Close idle connections; the next call opens new ones."""
        clients, self._clients = self._clients, None
        for client in clients or ():
            await client.close()  # calls in flight close their own connection when done


async def _get(conn: Connection, client: aiomcache.Client, key: bytes) -> bytes | None:
    return await _GET(client, conn, key)


def _exptime(ttl: int) -> int:
    if ttl < 0:
        raise ValueError(f"cache ttl must be >= 0 seconds, got {ttl!r}")
    return ttl if ttl <= _THIRTY_DAYS else int(time.time()) + ttl
