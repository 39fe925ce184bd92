"""What one request costs the real servers, counted by the servers themselves."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from quart import Quart, request
from werkzeug.exceptions import Unauthorized

from quart_api.guards import Guards, cached, protected, rate_limited
from quart_api.guards._state import state_of
from quart_api.testing import MemcachedServer, RedisServer
from tests.guards.conftest import Backend, Calls, make_app, peer, serving

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


#: A held reply must not look like a dead store (which the guards fail open on).
_HELD = {"STORE_TIMEOUT": 10}


class _ReplyGate:
    """A TCP relay to a real server whose replies can be held back (server -> client).

    While held, what the server answers waits in the relay: a test sees what the app
    sends elsewhere before that answer arrives, with no clock involved.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.address = ""

    async def __aenter__(self) -> _ReplyGate:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open.set()
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._target)
        for task in (
            asyncio.create_task(self._pump(client_r, server_w, gated=False)),
            asyncio.create_task(self._pump(server_r, client_w, gated=True)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if gated:
                    await self._open.wait()
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll ``condition`` (yielding to the loop) until it holds or ``seconds`` pass."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def _cached_behind_a_limit(app: Quart, calls: Calls, limit: int = 100) -> None:
    @app.get("/things")
    @rate_limited(limit=limit, minutes=1)
    @cached(minutes=5)
    async def things() -> str:
        return f"body {calls()}"


@dataclass
class _HeldAtTheCheck:
    """A second request to a cached route, whose limit check's Redis reply is held."""

    app: Quart
    guards: Guards
    calls: Calls
    gate: _ReplyGate
    pending: asyncio.Task[Any]
    #: memcached's gets before the request, and whether they grew while it was held
    gets_before: int
    asked_early: bool


@asynccontextmanager
async def _held_at_the_check(
    redis_server: RedisServer, memcached_server: MemcachedServer, memcached_servers: str
) -> AsyncIterator[_HeldAtTheCheck]:
    """A first request stores the entry; a second is started with Redis's replies held,
    and the block runs while it waits (until ``gate.release()`` or the block's end)."""
    async with _ReplyGate(redis_server.host, redis_server.port) as gate:
        backend = Backend("real", f"redis://{gate.address}/0", memcached_servers)
        app, guards = make_app(backend, _HELD)
        state_of(app).generation_ttl = 60.0  # remembered throughout the test
        calls = Calls()
        _cached_behind_a_limit(app, calls)
        async with serving(app) as client:
            assert (await client.get("/things")).headers["X-Cache"] == "miss"
            gets_before = _memcached_stat(memcached_server, "cmd_get")
            gate.hold()
            pending = asyncio.create_task(client.get("/things"))
            asked_early = await _until(
                lambda: _memcached_stat(memcached_server, "cmd_get") > gets_before
            )
            yield _HeldAtTheCheck(app, guards, calls, gate, pending, gets_before, asked_early)
            gate.release()
            await pending


async def test_a_cache_hit_asks_memcached_while_redis_still_answers_its_limit_check(
    redis_server: RedisServer, memcached_server: MemcachedServer, memcached_servers: str
) -> None:
    async with _held_at_the_check(redis_server, memcached_server, memcached_servers) as held:
        assert not held.pending.done(), "answered before Redis did: the limit was skipped"
        held.gate.release()
        hit = await held.pending
    assert held.asked_early, "the cache lookup waited for the limit check's round trip"
    assert hit.status_code == 200
    assert hit.headers["X-Cache"] == "hit"
    assert _memcached_stat(memcached_server, "cmd_get") - held.gets_before == 1
    assert held.calls.count == 1


async def test_an_entry_looked_up_early_is_not_served_after_its_namespace_was_invalidated(
    redis_server: RedisServer, memcached_server: MemcachedServer, memcached_servers: str
) -> None:
    async with _held_at_the_check(redis_server, memcached_server, memcached_servers) as held:
        assert held.asked_early
        await held.guards.invalidate("things", held.app)  # while the request waits
        held.gate.release()
        answer = await held.pending
    assert answer.headers["X-Cache"] == "miss"
    assert await answer.get_data(as_text=True) == "body 2"


async def test_a_flood_of_refused_requests_costs_memcached_one_key_not_one_each(
    memcached_server: MemcachedServer, redis_url: str, memcached_servers: str
) -> None:
    app, _ = make_app(Backend("real", redis_url, memcached_servers))
    state_of(app).generation_ttl = 60.0
    calls = Calls()
    _cached_behind_a_limit(app, calls, limit=2)
    async with serving(app) as client:
        assert [(await client.get("/things")).headers["X-Cache"] for _ in range(2)] == [
            "miss",
            "hit",
        ]
        gets_before = _memcached_stat(memcached_server, "cmd_get")
        refused = [(await client.get("/things")).status_code for _ in range(20)]
        gets = _memcached_stat(memcached_server, "cmd_get") - gets_before
        other = await client.get("/things", headers={"X-User": "bob"}, **peer("10.0.0.2"))
    assert refused == [429] * 20
    # The first refusal's lookup was sent with its check; after it, this client's
    # lookups wait for their checks, which refuse them.
    assert gets == 1
    assert other.headers["X-Cache"] == "hit", "another client is not held back"
    assert calls.count == 1


async def test_a_flood_of_bad_tokens_costs_memcached_nothing(
    memcached_server: MemcachedServer, redis_url: str, memcached_servers: str
) -> None:
    # A refused credential is answered 401 whatever the cache holds: its lookup would be
    # a memcached key per forged request, for nothing.
    app, guards = make_app(Backend("real", redis_url, memcached_servers))
    state_of(app).generation_ttl = 60.0  # the generation stays known: lookups may start early
    calls = Calls()
    _cached_behind_a_limit(app, calls)

    @guards.user_loader
    def refuse_bad_tokens() -> str | None:
        if request.headers.get("Authorization") == "Bearer forged":
            raise Unauthorized("bad token")
        return None

    async with serving(app) as client:
        assert [(await client.get("/things")).headers["X-Cache"] for _ in range(2)] == [
            "miss",
            "hit",
        ]
        gets_before = _memcached_stat(memcached_server, "cmd_get")
        forged = [
            (await client.get("/things", headers={"Authorization": "Bearer forged"})).status_code
            for _ in range(10)
        ]
        gets = _memcached_stat(memcached_server, "cmd_get") - gets_before
    assert forged == [401] * 10
    assert gets == 0
    assert calls.count == 1
