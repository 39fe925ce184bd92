"""What the guards use of redis-py below its client API is still there, by name.

``_redis_adapter`` is the only module that touches these; when a redis-py release moves
one, the test named for it fails here, before anything else does.
"""

from __future__ import annotations

import inspect

import pytest
from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection

from quart_api.guards.stores import _redis_adapter as redis_py


def test_redis_py_pools_still_hand_out_connections_with_get_connection_and_release() -> None:
    for pool in (BlockingConnectionPool, SentinelConnectionPool):
        assert inspect.iscoroutinefunction(pool.get_connection)
        assert inspect.iscoroutinefunction(pool.release)
        assert "inuse_connections" in inspect.signature(pool.disconnect).parameters


def test_redis_py_connections_still_send_packed_commands_and_read_responses() -> None:
    assert inspect.iscoroutinefunction(Connection.send_packed_command)
    assert list(inspect.signature(Connection.send_packed_command).parameters)[1:3] == [
        "command",
        "check_health",
    ]
    assert inspect.iscoroutinefunction(Connection.read_response)
    assert "nowait" in inspect.signature(Connection.disconnect).parameters
    assert callable(Connection.pack_commands)


def test_redis_py_hiredis_parser_still_keeps_its_reader_and_reads_from_the_socket() -> None:
    """``read_replies`` takes whole replies from the parser's hiredis reader in one loop."""
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser

    conn = Connection()
    assert isinstance(conn._parser, _AsyncHiredisParser)
    assert inspect.iscoroutinefunction(_AsyncHiredisParser.read_from_socket)
    assert "self._connected" in inspect.getsource(_AsyncHiredisParser.read_response)
    source = inspect.getsource(_AsyncHiredisParser.on_connect)
    assert "self._reader = hiredis.Reader(" in source
    assert '"notEnoughData": NOT_ENOUGH_DATA' in source
    assert NOT_ENOUGH_DATA is not False  # a sentinel no reply can be


def test_redis_py_sentinel_connections_still_read_through_their_own_read_response() -> None:
    """``read_replies`` reads through ``read_response`` where a class overrides it."""
    assert SentinelManagedConnection.read_response is not Connection.read_response


def test_redis_py_connections_still_keep_their_stream_writer_in__writer() -> None:
    conn = Connection()
    assert hasattr(conn, "_writer")
    assert conn._writer is None  # not connected yet: reply_waiting answers False
    assert redis_py.reply_waiting(conn) is False


def test_redis_py_connections_still_open_without_setinfo_hello_or_maint_notifications() -> None:
    """A new connection must be a TCP connect and nothing more: the options that say so."""
    parameters = inspect.signature(AbstractConnection.__init__).parameters
    assert {"driver_info", "protocol", "maint_notifications_config"} <= set(parameters)
    pool = redis_py.url_pool(
        "redis://127.0.0.1:1/0", max_connections=2, pool_timeout=1, connect_timeout=1
    )
    conn = pool.make_connection()
    assert pool.connection_kwargs["driver_info"] is None
    assert pool.connection_kwargs["socket_timeout"] is None
    assert conn.get_protocol() == 2
    assert not conn.maint_notifications_config or not conn.maint_notifications_config.enabled


def test_redis_py_sentinel_connections_still_turn_readonly_into_connection_errors() -> None:
    """After a failover the old primary answers READONLY: the link must see a dead link."""
    source = inspect.getsource(SentinelManagedConnection.read_response)
    assert "ReadOnlyError" in source
    assert "ConnectionError" in source


def test_redis_py_still_parses_moved_replies_with_slot_and_node() -> None:
    moved = rx.MovedError("3999 127.0.0.1:6381")
    assert (moved.slot_id, moved.host, int(moved.port)) == (3999, "127.0.0.1", 6381)
    assert issubclass(rx.NoScriptError, rx.ResponseError)


@pytest.mark.parametrize("name", redis_py.__all__)
def test_the_adapter_exports_what_it_names(name: str) -> None:
    assert hasattr(redis_py, name)
