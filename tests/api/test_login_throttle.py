"""Login brute force: failures count per client IP and per account, each up to PROTECT_LIMIT.

Every test runs on the in-process memory store and on a real Redis, through the
service's real login route. Clients are told apart by ``X-Forwarded-For`` behind
one trusted proxy, as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from quart.wrappers import Response

from quart_api.api import sessions
from quart_api.settings import RateSpec
from tests.api.conftest import PASSWORD, make_app, user_maker
from tests.api.helpers import assert_problem

LOGIN = "/api/v1/auth/login"
WRONG = "wrong password"


@pytest.fixture(params=["memory", "redis"])
def redis_or_memory(request: pytest.FixtureRequest) -> str | None:
    """``REDIS_URL`` of a test: unset (memory store), then a real, flushed Redis."""
    return None if request.param == "memory" else str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def service(tmp_path: Path, redis_or_memory: str | None) -> AsyncIterator[Quart]:
    """The service behind one proxy, PROTECT_LIMIT 4 failures an hour; alice and mallory."""
    app = await make_app(
        tmp_path,
        redis_url=redis_or_memory,
        trusted_proxy_count=1,
        protect_limit=RateSpec(4, 3600),
    )
    async with app.test_app():
        make = user_maker(app)
        await make("alice")
        await make("mallory")
        yield app


async def login(client: Client, username: str, password: str, ip: str) -> Response:
    """A login from client ``ip`` (as the trusted proxy reports it)."""
    return await client.post(
        LOGIN,
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": ip},
        scope_base={"client": ("10.0.0.254", 40000)},
    )


async def test_guessing_a_victim_between_logins_to_your_own_account_is_stopped(
    service: Quart,
) -> None:
    """A success clears only its own account's count: it no longer launders the guesses."""
    client = service.test_client()
    guesses = []
    for _ in range(3):
        for _ in range(3):
            guesses.append(await login(client, "alice", WRONG, "203.0.113.9"))
        await login(client, "mallory", PASSWORD, "203.0.113.9")
    assert [r.status_code for r in guesses] == [401] * 4 + [429] * 5
    blocked = guesses[-1]
    await assert_problem(blocked, 429, detail="too many failed logins")
    assert int(blocked.headers["Retry-After"]) > 3000
    assert "RateLimit" in blocked.headers
    assert "RateLimit-Policy" in blocked.headers


async def test_rotating_forwarded_for_against_one_account_is_stopped(service: Quart) -> None:
    client = service.test_client()
    statuses = [
        (await login(client, "alice", WRONG, f"198.51.100.{n}")).status_code for n in range(8)
    ]
    owner = await login(client, "alice", PASSWORD, "192.0.2.77")
    other_account = await login(client, "mallory", PASSWORD, "192.0.2.77")
    assert statuses == [401] * 4 + [429] * 4
    await assert_problem(owner, 429, detail="too many failed logins")
    assert "Set-Cookie" not in owner.headers
    assert other_account.status_code == 200, "only the attacked account is locked"


async def test_unknown_usernames_are_counted_like_known_ones(service: Quart) -> None:
    client = service.test_client()
    statuses = [
        (await login(client, "nobody", WRONG, f"198.51.100.{n}")).status_code for n in range(6)
    ]
    assert statuses == [401] * 4 + [429] * 2


async def test_case_variants_of_a_username_share_one_count(service: Quart) -> None:
    client = service.test_client()
    spellings = ["alice", "ALICE", "Alice", "aLiCe", "ALIce", "alicE"]
    statuses = [
        (await login(client, name, WRONG, f"198.51.100.{n}")).status_code
        for n, name in enumerate(spellings)
    ]
    assert statuses == [401] * 4 + [429] * 2


async def test_fifty_concurrent_wrong_guesses_reach_the_password_check_protect_limit_times(
    service: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = 0
    real_verify = sessions.averify_password

    async def counting_verify(password_hash: str, password: str) -> bool:
        nonlocal checked
        checked += 1
        return await real_verify(password_hash, password)

    monkeypatch.setattr(sessions, "averify_password", counting_verify)
    client = service.test_client()
    responses = await asyncio.gather(
        *(login(client, "alice", WRONG, f"198.51.100.{n}") for n in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert checked == 4, "at most PROTECT_LIMIT guesses may reach the password check"
    assert statuses == [401] * 4 + [429] * 46


async def test_a_success_clears_only_that_account_for_that_client(service: Quart) -> None:
    client = service.test_client()
    x, y, z = "198.51.100.1", "198.51.100.2", "198.51.100.3"
    for _ in range(2):
        await login(client, "alice", WRONG, y)  # alice: 2 from y
    await login(client, "alice", WRONG, x)  # alice: 3
    for _ in range(2):
        await login(client, "mallory", WRONG, x)  # x: 3 failures in all
    assert (await login(client, "alice", PASSWORD, x)).status_code == 200
    # x's own failures on alice are gone (alice: 2, x: 2); the rest stay.
    assert (await login(client, "mallory", WRONG, x)).status_code == 401  # x: 3
    assert (await login(client, "mallory", WRONG, x)).status_code == 401  # x: 4
    assert (await login(client, "mallory", PASSWORD, x)).status_code == 429, "x is at the limit"
    await login(client, "alice", WRONG, y)  # alice: 3
    assert (await login(client, "alice", WRONG, y)).status_code == 401  # alice: 4
    owner = await login(client, "alice", PASSWORD, z)
    assert owner.status_code == 429, "y's failures on alice survived x's success"


async def test_malformed_login_requests_are_not_failed_logins(service: Quart) -> None:
    client = service.test_client()
    for _ in range(6):
        response = await client.post(
            LOGIN,
            json={"username": "alice"},
            headers={"X-Forwarded-For": "198.51.100.1"},
        )
        assert response.status_code == 422
    assert (await login(client, "alice", PASSWORD, "198.51.100.1")).status_code == 200
