"""Limits stay exact when several processes serve one app and share one Redis.

A deployment runs ``hypercorn --workers N`` on each of several hosts behind a load
balancer: every process has its own memory, so a limit holds only if its counting
happens in Redis, atomically. Two topologies, over real HTTP: one hypercorn with two
workers (the kernel spreads connections over them), and two hypercorn processes on
different ports (standing in for two hosts), both on the session's Redis.

N clients, each told apart by the address its proxy appended to ``X-Forwarded-For``
(``TRUSTED_PROXY_COUNT=1``) and by its own user, fire at once; every request goes
on a new connection, alternating between the servers. Each client gets exactly
``limit`` answers through and 429 for the rest, and exactly ``limit`` failures on a
``@protected`` route before it is blocked.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quart_api.testing import RedisServer
from tests.resilience.apps import PID_HEADER, USER_HEADER, VIEW_HEADER
from tests.resilience.conftest import GUARDED, log_text, serve, server_env

pytestmark = pytest.mark.slow

CLIENTS = 8
RATE_LIMIT = 12  # per client; an hour's window, so none is paid back during the test
PROTECT_LIMIT = 3
EXTRA = 6  # requests each client sends past its limit


@pytest.fixture(scope="module", params=["2-workers", "2-servers"])
def servers(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[str]]:
    """Base URLs of the processes serving the guarded app: one with 2 workers, or two."""
    env = server_env(
        REDIS_URL=redis_server.url,
        TRUSTED_PROXY_COUNT="1",
        API_RATE_LIMIT=f"{RATE_LIMIT}/hour",
        PROTECT_LIMIT=f"{PROTECT_LIMIT}/hour",
    )
    logs = tmp_path_factory.mktemp("many-workers")
    if request.param == "2-workers":
        with serve(GUARDED, env, logs, workers=2, name="two-workers") as app:
            yield [app.base_url]
    else:
        with (
            serve(GUARDED, env, logs, name="server-a") as first,
            serve(GUARDED, env, logs, name="server-b") as second,
        ):
            yield [first.base_url, second.base_url]


def _client_headers(index: int) -> dict[str, str]:
    """Client ``index`` behind one proxy: the proxy appended its address; its own user."""
    return {"X-Forwarded-For": f"10.77.0.{index + 1}", USER_HEADER: f"user-{index}"}


def _new_connection_each_time() -> httpx.AsyncClient:
    """No keep-alive: each request is a new connection, which any worker may accept."""
    return httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


async def test_each_client_gets_exactly_its_rate_limit_through(
    servers: list[str], redis_url: str
) -> None:
    sent = RATE_LIMIT + EXTRA
    async with _new_connection_each_time() as http:

        async def call(client: int, n: int) -> httpx.Response:
            url = servers[n % len(servers)] + "/limited"
            return await http.get(url, headers=_client_headers(client))

        responses = await asyncio.gather(
            *(call(client, n) for client in range(CLIENTS) for n in range(sent))
        )
    per_client = [
        Counter(r.status_code for r in responses[c * sent : (c + 1) * sent]) for c in range(CLIENTS)
    ]
    assert per_client == [Counter({200: RATE_LIMIT, 429: EXTRA})] * CLIENTS
    assert all(r.headers.get(VIEW_HEADER) for r in responses if r.status_code == 200)
    assert all("Retry-After" in r.headers for r in responses if r.status_code == 429)
    pids = {r.headers[PID_HEADER] for r in responses}
    assert len(pids) == 2, f"the requests did not spread over both processes: {pids}"


async def test_each_client_gets_exactly_its_protected_failures(
    servers: list[str], redis_url: str
) -> None:
    """Clients fail in parallel; each client's own requests follow one another.

    A client's requests are sequential because ``@protected`` counts a failure once
    its response is known: requests of one client already past the check when the
    limit-th failure lands are not stopped (they were admitted while it was not
    banned yet), here or in any other implementation that counts outcomes.
    """
    sent = PROTECT_LIMIT + EXTRA
    async with _new_connection_each_time() as http:

        async def client_run(client: int) -> list[httpx.Response]:
            headers = _client_headers(client)
            return [
                await http.get(f"{servers[n % len(servers)]}/guess/miss-{n}", headers=headers)
                for n in range(sent)
            ]

        runs = await asyncio.gather(*(client_run(client) for client in range(CLIENTS)))
        # Blocked means blocked everywhere, even for a name that exists.
        after = await asyncio.gather(
            *(
                http.get(f"{url}/guess/ok", headers=_client_headers(client))
                for client in range(CLIENTS)
                for url in servers
            )
        )
        fresh = await http.get(f"{servers[-1]}/guess/ok", headers=_client_headers(CLIENTS))
    for responses in runs:
        reached_view = [bool(r.headers.get(VIEW_HEADER)) for r in responses]
        assert reached_view == [True] * PROTECT_LIMIT + [False] * EXTRA
        assert {r.status_code for r in responses} == {404}
    assert not any(r.headers.get(VIEW_HEADER) for r in after)
    assert {r.status_code for r in after} == {404}
    assert fresh.status_code == 200
    assert fresh.headers[VIEW_HEADER] == "1"


def _memory_warning(log: str) -> list[int]:
    return [
        int(n)
        for n in re.findall(r"Guards use in-process memory stores in one of (\d+) worker", log)
    ]


def test_memory_stores_under_two_workers_log_a_warning(tmp_path: Path) -> None:
    """Memory stores split by workers multiply every limit: each worker says so at start-up."""
    with serve(GUARDED, server_env(), tmp_path, workers=2, name="memory-2") as app:
        pass  # serve() returned once both workers answered: before_serving has run
    assert _memory_warning(log_text(app)) == [2, 2], log_text(app)


def test_memory_stores_under_one_worker_do_not_warn(tmp_path: Path) -> None:
    """One worker owns all the state: no warning (multiprocessing's helper is no worker)."""
    with serve(GUARDED, server_env(), tmp_path, workers=1, name="memory-1") as app:
        pass
    log = log_text(app)
    assert "Running on http://" in log
    assert _memory_warning(log) == [], log
