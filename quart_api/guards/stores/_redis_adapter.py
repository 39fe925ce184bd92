"""Everything the guards use of redis-py, in one place (checked on redis-py 8.1).

The Redis link drives connections itself: it packs a pipeline, writes it on a
connection it keeps between pipelines and reads every reply, so it needs a few
methods below redis-py's client API (``get_connection``, ``send_packed_command``,
``read_response``, ``disconnect(nowait=True)``), a few private attributes (a
connection's ``_writer``, to see whether a reply waits unread in its socket, and
``_reader``; its hiredis parser's ``_reader``, ``read_from_socket`` and
``NOT_ENOUGH_DATA``, to read a pipeline's replies in one loop) and the
``driver_info=None`` argument that skips ``CLIENT SETINFO`` on connect.
``tests/guards/stores/test_redis_adapter.py`` fails by name when one of them moves;
``pyproject.toml`` bounds redis below the next major release for that reason.
"""

from __future__ import annotations

import select
from functools import lru_cache
from typing import Any

from redis import exceptions as rx
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio import BlockingConnectionPool, ConnectionPool
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.crc import key_slot
from redis.maint_notifications import MaintNotificationsConfig

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _hiredis_pack = None  # type: ignore[assignment]

__all__ = [
    "CLIENT_ERRORS",
    "CLIENT_TIMEOUTS",
    "AskError",
    "ConnectionError",
    "MovedError",
    "NoScriptError",
    "Pool",
    "ResponseError",
    "Sentinel",
    "close_pool",
    "close_sentinel",
    "disconnect_idle",
    "drop",
    "get_connection",
    "node_pool",
    "pack",
    "read_replies",
    "read_reply",
    "release",
    "reply_waiting",
    "send",
    "sentinel_pool",
    "slot_of",
    "url_pool",
]

Pool = ConnectionPool
ConnectionError = rx.ConnectionError
ResponseError = rx.ResponseError
NoScriptError = rx.NoScriptError
MovedError = rx.MovedError
AskError = rx.AskError

#: Everything redis-py (and the sockets under it) can raise. Exception roots of
#: redis.exceptions that do not derive from RedisError are listed on their own; a test
#: walks that module so a new root cannot slip past.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    rx.RedisError,
    rx.RedisClusterException,
    rx.ChildDeadlockedError,
    rx.IncorrectPolicyType,
    OSError,
    EOFError,
)
CLIENT_TIMEOUTS: tuple[type[BaseException], ...] = (rx.TimeoutError,)

# Our own deadlines bound every read, so redis-py's socket timeout (a timer per reply)
# is off. A new connection is a TCP connect and nothing more (AUTH or SELECT only when
# the URL asks for them): no CLIENT SETINFO (``driver_info=None``), no HELLO (RESP2, the
# protocol our scripts' replies need nothing more than), no CLIENT MAINT_NOTIFICATIONS
# (a managed-cloud feature): each would be one more round trip on every connect.
_CONNECTION_OPTIONS: dict[str, Any] = {
    "socket_timeout": None,
    "driver_info": None,
    "protocol": 2,
    "maint_notifications_config": MaintNotificationsConfig(enabled=False),
}


@lru_cache(maxsize=65536)
def slot_of(key: str | bytes) -> int:
    """The Redis Cluster hash slot of ``key`` (its ``{hash tag}``'s, when it has one).

    Remembered: a client's keys come back with each of its requests, and the slot is
    CRC16 of the tag, found in Python.
    """
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def url_pool(
    url: str, *, max_connections: int, pool_timeout: float, connect_timeout: float
) -> BlockingConnectionPool:
    """A bounded pool for a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_connect_timeout=connect_timeout,
        **_CONNECTION_OPTIONS,
    )


def node_pool(
    host: str,
    port: int,
    auth: dict[str, str],
    *,
    max_connections: int,
    pool_timeout: float,
    connect_timeout: float,
) -> BlockingConnectionPool:
    """A bounded pool for one Redis Cluster node."""
    return BlockingConnectionPool(
        host=host,
        port=port,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_connect_timeout=connect_timeout,
        username=auth.get("username"),
        password=auth.get("password"),
        **_CONNECTION_OPTIONS,
    )


def sentinel_pool(
    sentinels: list[tuple[str, int]],
    master_name: str,
    db: int,
    auth: dict[str, str],
    *,
    max_connections: int,
    connect_timeout: float,
) -> tuple[Sentinel, SentinelConnectionPool]:
    """The sentinels and a pool whose connections open on the primary they name now.

    Each new connection asks the sentinels where the primary is; when that changes,
    the pool drops its idle connections, and a connection to a primary that was
    demoted turns its ``READONLY`` reply into a ``ConnectionError``. The pool itself
    is unbounded (it raises past ``max_connections``): the link's slots bound it.
    """
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels,
        socket_timeout=None,
        sentinel_kwargs={
            "socket_timeout": connect_timeout,
            "socket_connect_timeout": connect_timeout,
        },
    )
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        master_name,
        sentinel,
        max_connections=max_connections,
        socket_connect_timeout=connect_timeout,
        db=db,
        **auth,
        **_CONNECTION_OPTIONS,
    )
    return sentinel, pool


async def get_connection(pool: Pool) -> Connection:
    """A connection from ``pool``, connected (its own wait is bounded by ``pool_timeout``)."""
    return await pool.get_connection()  # type: ignore[no-untyped-call,no-any-return]


async def release(pool: Pool, conn: Connection) -> None:
    await pool.release(conn)


async def disconnect_idle(pool: Pool) -> None:
    """Close the pool's idle connections (a restart or failover killed them all)."""
    await pool.disconnect(inuse_connections=False)


async def close_pool(pool: Pool) -> None:
    await pool.aclose()


async def close_sentinel(sentinel: Sentinel) -> None:
    await sentinel.aclose()


async def drop(conn: Connection) -> None:
    """Close ``conn`` at once: its socket may still carry a reply nobody will read."""
    await conn.disconnect(nowait=True)


def pack(conn: Connection, commands: list[tuple[Any, ...]]) -> bytes | list[bytes]:
    """RESP bytes of ``commands``: hiredis packs them in C, redis-py in Python."""
    if _hiredis_pack is None:
        return conn.pack_commands(commands)
    return b"".join(map(_hiredis_pack, commands))


async def send(conn: Connection, packed: bytes | list[bytes]) -> None:
    """Write a packed pipeline (connecting first when the connection is new)."""
    await conn.send_packed_command(packed, False)


async def read_reply(conn: Connection) -> Any:
    """The next reply; a Redis error reply is raised (the stream stays in step)."""
    return await conn.read_response()


async def read_replies(conn: Connection, count: int, into: list[Any]) -> None:
    """Append the next ``count`` replies to ``into``; a Redis error reply is appended as
    its exception (the stream stays in step), a dead connection raises ``ConnectionError``.

    With hiredis under a plain connection, replies are taken from its reader while it
    holds whole ones and the socket is read only when it runs dry: a pipeline's replies
    cost one loop, not a stack of three coroutines each. A connection class with its
    own ``read_response`` (Sentinel's turns ``READONLY`` into a dead link) reads each
    reply through it.
    """
    parser = conn._parser
    if type(conn).read_response is not Connection.read_response or not isinstance(
        parser, _AsyncHiredisParser
    ):
        for _ in range(count):
            try:
                into.append(await conn.read_response())
            except ResponseError as exc:
                into.append(exc)
        return
    wanted = len(into) + count
    try:
        if not getattr(parser, "_connected", False):  # set by on_connect
            raise ConnectionError("Connection closed by server.")
        reader: Any = parser._reader
        while len(into) < wanted:
            reply = reader.gets()
            if reply is NOT_ENOUGH_DATA:
                await parser.read_from_socket()  # type: ignore[no-untyped-call]
            elif isinstance(reply, ConnectionError):
                raise reply
            else:
                into.append(reply)
    except ConnectionError:
        await conn.disconnect(nowait=True)
        raise
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise ConnectionError(f"Error while reading from redis: {exc.args}") from exc
    except BaseException:
        await conn.disconnect(nowait=True)
        raise


def reply_waiting(conn: Connection) -> bool:
    """Whether bytes of a reply sit in ``conn``'s socket, not yet read by the event loop.

    A reply the server delivered in time must not count as a timeout because the
    worker's loop was too busy to read it: see ``_deadline.Deadline``.
    """
    writer = conn._writer
    if writer is None:
        return False
    sock = writer.transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return bool(readable)
