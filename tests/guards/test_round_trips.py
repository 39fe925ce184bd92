"""What one request costs the real servers, counted by the servers themselves."""

from __future__ import annotations

import socket

from quart import request

from quart_api.guards import cached, protected, rate_limited
from quart_api.testing import MemcachedServer, RedisServer
from tests.guards.conftest import Backend, Calls, make_app, serving

# Commands a client sends when it connects or that this test sends itself.
# Commands check.lua and fail.lua run inside Redis (counted by commandstats too).
_INSIDE_SCRIPTS = {
    *("time", "get", "set", "pttl", "incr", "pexpire", "exists", "expire"),
    *("hget", "hincrby", "hdel", "del", "decr", "decrby"),
}
_HOUSEKEEPING = {"info", "config|resetstat", "config", "client|setinfo", "hello", "ping", "select"}


def _redis_calls(server: RedisServer) -> dict[str, int]:
    with server.client() as client:
        stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {name: n for name, n in calls.items() if name not in _HOUSEKEEPING}


def _reset_redis_stats(server: RedisServer) -> None:
    with server.client() as client:
        client.config_resetstat()


def _memcached_stat(server: MemcachedServer, name: str) -> int:
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    raise AssertionError(f"memcached stats has no {name}")


async def test_limits_and_bans_cost_one_script_call_per_request(
    redis_server: RedisServer, redis_url: str, memcached_servers: str
) -> None:
    app, _ = make_app(Backend("real", redis_url, memcached_servers))

    @app.get("/things/<name>")
    @rate_limited(limit=100, minutes=1)  # per IP and per user: two limits
    @protected(limit=10, minutes=60)  # and one ban check
    async def things(name: str) -> tuple[str, int]:
        return name, 200 if name == "ok" else 404

    alice = {"X-User": "alice"}
    async with serving(app) as client:
        await client.get("/things/ok", headers=alice)  # loads the script once
        _reset_redis_stats(redis_server)
        for _ in range(5):
            assert (await client.get("/things/ok", headers=alice)).status_code == 200
        successes = _redis_calls(redis_server)
        _reset_redis_stats(redis_server)
        for _ in range(3):
            assert (await client.get("/things/missing", headers=alice)).status_code == 404
        failures = _redis_calls(redis_server)
    # commandstats also counts the commands a script runs inside Redis; those are
    # not round trips. One script per request, each reading the server clock once,
    # and nothing else sent by the client:
    assert successes.pop("evalsha", 0) + successes.pop("eval", 0) == 5
    assert successes.pop("time") == 5
    assert set(successes) <= _INSIDE_SCRIPTS, successes
    # A failure costs the check before the view plus recording it after.
    assert failures.pop("evalsha", 0) + failures.pop("eval", 0) == 6
    assert set(failures) <= _INSIDE_SCRIPTS, failures


async def test_a_keyed_attempt_costs_one_script_call_plus_one_when_given_back(
    redis_server: RedisServer, redis_url: str, memcached_servers: str
) -> None:
    """The attempt is reserved inside the one check; a failure keeps it for free."""
    app, _ = make_app(Backend("real", redis_url, memcached_servers))

    @app.post("/login/<outcome>")
    @rate_limited(limit=100, minutes=1)
    @protected(
        limit=100,
        minutes=60,
        statuses={401},
        reset_on_success=True,
        key=lambda: request.args["user"],
    )
    async def login(outcome: str) -> tuple[str, int]:
        return "", 401 if outcome == "fail" else 200

    async with serving(app) as client:
        await client.post("/login/ok?user=alice")  # loads the scripts once
        _reset_redis_stats(redis_server)
        for _ in range(5):
            assert (await client.post("/login/fail?user=alice")).status_code == 401
        failures = _redis_calls(redis_server)
        _reset_redis_stats(redis_server)
        for _ in range(3):
            assert (await client.post("/login/ok?user=alice")).status_code == 200
        successes = _redis_calls(redis_server)
    assert failures.pop("evalsha", 0) + failures.pop("eval", 0) == 5
    assert set(failures) <= _INSIDE_SCRIPTS, failures
    assert successes.pop("evalsha", 0) + successes.pop("eval", 0) == 6
    assert set(successes) <= _INSIDE_SCRIPTS, successes


async def test_cache_hit_costs_one_memcached_get_and_no_view_call(
    memcached_server: MemcachedServer, redis_url: str, memcached_servers: str
) -> None:
    app, _ = make_app(Backend("real", redis_url, memcached_servers))
    calls = Calls()

    @app.get("/things")
    @rate_limited(limit=100, minutes=1)
    @cached(minutes=5)
    async def things() -> str:
        calls()
        return "body"

    async with serving(app) as client:
        assert (await client.get("/things")).headers["X-Cache"] == "miss"
        gets_before = _memcached_stat(memcached_server, "cmd_get")
        sets_before = _memcached_stat(memcached_server, "cmd_set")
        hit = await client.get("/things")
        gets = _memcached_stat(memcached_server, "cmd_get") - gets_before
        sets = _memcached_stat(memcached_server, "cmd_set") - sets_before
    assert hit.headers["X-Cache"] == "hit"
    assert gets == 1, "the namespace generation must not add a second key to a hit"
    assert sets == 0
    assert calls.count == 1
