"""Everything the guards use of aiomcache, in one place (checked on aiomcache 0.8.2).

The memcached store uses aiomcache only for its connection pool (``MemcachePool``,
what an ``aiomcache.Client`` wraps) and writes the few commands it needs itself. A
connection whose reply may still be on the way must be closed, never returned to
the pool; the pool has no public way to do that, so :func:`discard` reaches into
its ``_in_use`` set and ``_do_close`` (which alone would leak the pool slot).
``tests/guards/stores/test_aiomcache_adapter.py`` fails by name when they move;
``pyproject.toml`` bounds aiomcache below 0.9 for that reason.
"""

from __future__ import annotations

import select

from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection, MemcachePool

__all__ = [
    "ClientException",
    "Connection",
    "acquire",
    "clear",
    "discard",
    "new_pool",
    "release",
    "reply_waiting",
]


def new_pool(host: str, port: int, size: int) -> MemcachePool:
    """A pool of ``size`` connections to one server (opened on first use)."""
    return MemcachePool(host, port, minsize=size, maxsize=size)


async def acquire(pool: MemcachePool) -> Connection:
    return await pool.acquire()


def release(pool: MemcachePool, conn: Connection) -> None:
    """Give a connection that finished cleanly back to its pool."""
    pool.release(conn)


def discard(pool: MemcachePool, conn: Connection) -> None:
    """Close ``conn`` and free its place in the pool (a reply may still be on the way)."""
    pool._in_use.discard(conn)
    pool._do_close(conn)


async def clear(pool: MemcachePool) -> None:
    """Close the pool's idle connections (calls in flight close their own when done)."""
    await pool.clear()


def reply_waiting(conn: Connection) -> bool:
    """Whether bytes of a reply sit in ``conn``'s socket, not yet read by the event loop."""
    sock = conn.writer.get_extra_info("socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return bool(readable)
