"""The delaying relay of ``make cluster-bench``: the delay it adds, order, and a dead host.

Against a real Redis. Timing is only ever checked as a lower bound (a relay that
delays each way by ``d`` can never answer a round trip in less than ``2 d``),
never as an upper one: this machine is shared and a late answer means nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from bench.cluster.relay import RelaySpec
from bench.cluster.relay_process import RelayProcess
from quart_api.testing import RedisServer, free_port

RELAY_HOST = "127.0.0.21"  # any 127.0.0.0/8 address answers on lo


@pytest.fixture
def relayed(redis_server: RedisServer) -> Iterator[tuple[RelayProcess, redis.Redis]]:
    """A relay in front of the session's Redis, and a client that goes through it."""
    redis_server.flush()
    port = free_port()
    spec = RelaySpec("redis", RELAY_HOST, port, redis_server.host, redis_server.port)
    with RelayProcess("test", [spec]) as relay:
        client = redis.Redis(RELAY_HOST, port, socket_timeout=10)
        try:
            yield relay, client
        finally:
            client.close()


def test_every_round_trip_takes_at_least_twice_the_one_way_delay(
    relayed: tuple[RelayProcess, redis.Redis],
) -> None:
    relay, client = relayed
    client.ping()  # connected before the clock starts
    relay.set_delay(one_way_ms=2.0)
    before = relay.stats()["relays"]["redis"]
    for _ in range(20):
        started = time.perf_counter()
        assert client.ping() is True
        assert time.perf_counter() - started >= 0.004
    after = relay.stats()["relays"]["redis"]
    # One chunk each way per PING: the relay counts round trips.
    assert after["up_chunks"] - before["up_chunks"] == 20
    assert after["down_chunks"] - before["down_chunks"] == 20
    assert after["delayed_chunks"] - before["delayed_chunks"] == 40
    assert after["delayed_s"] - before["delayed_s"] >= 40 * 0.002


def test_pipelined_replies_arrive_intact_and_in_order_under_jitter(
    relayed: tuple[RelayProcess, redis.Redis],
) -> None:
    relay, client = relayed
    relay.set_delay(one_way_ms=0.5, jitter_ms=0.5)  # jitter as large as the delay
    pipe = client.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(f"k{i}", i)
        pipe.incr(f"k{i}")
        pipe.get(f"k{i}")
    replies = pipe.execute()
    assert replies[0::3] == [True] * 3000
    assert replies[1::3] == [i + 1 for i in range(3000)]
    assert replies[2::3] == [str(i + 1).encode() for i in range(3000)]


def test_a_cut_resets_the_connection_and_loses_what_was_in_flight(
    relayed: tuple[RelayProcess, redis.Redis], redis_server: RedisServer
) -> None:
    relay, client = relayed
    client.ping()
    relay.set_delay(one_way_ms=2000.0)
    connection = client.connection_pool.get_connection()
    connection.send_packed_command(connection.pack_commands([("SET", "lost", 1)]))
    assert relay.cut("redis") == 1
    with pytest.raises(redis.ConnectionError):
        connection.read_response()
    client.connection_pool.release(connection)
    with redis_server.client() as direct:
        assert direct.exists("lost") == 0  # never reached the server


def test_a_client_is_closed_when_the_server_behind_the_relay_is_down() -> None:
    port, dead = free_port(), free_port()
    with RelayProcess("test", [RelaySpec("dead", RELAY_HOST, port, "127.0.0.1", dead)]) as relay:
        client = redis.Redis(RELAY_HOST, port, socket_timeout=5)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        client.close()
        assert relay.stats()["relays"]["dead"]["refused_upstream"] >= 1
