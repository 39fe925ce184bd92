"""Attacks on ``POST /api/v1/users/current/password``: the old password as an oracle.

Whoever holds a session or a token with ``users:write`` (a stolen laptop's token, a
third-party app the user authorized) may call this route; the old password is what
keeps them from taking the account. Its refusals are counted like failed logins:
per account and per client IP, ``PROTECT_LIMIT`` each, then 429.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from quart.wrappers import Response
from sqlalchemy import select

from quart_api import passwords
from quart_api.db import Database
from quart_api.models import User
from quart_api.settings import RateSpec
from tests.api.conftest import PASSWORD, bearer_maker, make_app, user_maker
from tests.api.helpers import assert_problem, logged_in

CHANGE = "/api/v1/users/current/password"
NEW_PASSWORD = "a brand new passphrase"
LIMIT = 3
PROXY = {"client": ("10.0.0.254", 40000)}


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Quart]:
    """The service behind one trusted proxy, PROTECT_LIMIT 3 failures an hour."""
    app = await make_app(tmp_path, trusted_proxy_count=1, protect_limit=RateSpec(LIMIT, 3600))
    async with app.test_app():
        await user_maker(app)("alice")
        await user_maker(app)("bob")
        yield app


async def change(
    client: Client, old: str, auth: dict[str, str] | None = None, ip: str = "203.0.113.9"
) -> Response:
    headers = {**(auth or {}), "X-Forwarded-For": ip}
    body = {"old_password": old, "new_password": NEW_PASSWORD}
    return await client.post(CHANGE, json=body, headers=headers, scope_base=PROXY)


async def test_guessing_the_old_password_with_a_stolen_token_is_locked_out(service: Quart) -> None:
    """Three wrong guesses, then 429 without the password being checked: the right
    password is refused too, and the password stays what it was."""
    client = service.test_client()
    token = await bearer_maker(service)(await _user(service, "alice"))
    guesses = [await change(client, f"guess number {n}", token) for n in range(LIMIT + 2)]
    assert [r.status_code for r in guesses] == [422] * LIMIT + [429] * 2
    await assert_problem(guesses[-1], 429, detail="too many failed password changes")
    assert "Retry-After" in guesses[-1].headers
    assert "RateLimit-Policy" in guesses[-1].headers
    right = await change(client, PASSWORD, token)
    assert right.status_code == 429
    await logged_in(service, "alice", PASSWORD)  # unchanged


async def test_rotating_forwarded_for_does_not_give_the_old_password_more_guesses(
    service: Quart,
) -> None:
    """The count is kept per account across addresses (and the session cookie is
    another way in to the same account: it shares the count)."""
    client = service.test_client()
    token = await bearer_maker(service)(await _user(service, "alice"))
    statuses = [
        (await change(client, f"guess {n}", token, ip=f"198.51.100.{n}")).status_code
        for n in range(LIMIT + 2)
    ]
    assert statuses == [422] * LIMIT + [429] * 2
    browser = await logged_in(service, "alice")
    from_the_cookie = await browser.post(
        CHANGE,
        json={"old_password": "one more guess", "new_password": NEW_PASSWORD},
        headers={"X-Forwarded-For": "192.0.2.77"},
        scope_base=PROXY,
    )
    assert from_the_cookie.status_code == 429


async def test_another_accounts_password_change_is_not_locked_by_a_guesser(
    service: Quart,
) -> None:
    """The guesser's address is locked; bob, from his own address, changes his."""
    client = service.test_client()
    alice_token = await bearer_maker(service)(await _user(service, "alice"))
    for n in range(LIMIT):
        await change(client, f"guess {n}", alice_token)
    bob_token = await bearer_maker(service)(await _user(service, "bob"))
    assert (await change(client, PASSWORD, bob_token, ip="192.0.2.10")).status_code == 204


async def test_fifty_concurrent_old_password_guesses_reach_the_check_protect_limit_times(
    service: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt is reserved before the password check: a burst cannot overshoot."""
    checks = 0
    verify = passwords.averify_password

    async def counting_verify(password_hash: str, password: str) -> bool:
        nonlocal checks
        checks += 1
        return await verify(password_hash, password)

    monkeypatch.setattr("quart_api.api.users.averify_password", counting_verify)
    client = service.test_client()
    token = await bearer_maker(service)(await _user(service, "alice"))
    responses = await asyncio.gather(*(change(client, f"guess {n}", token) for n in range(50)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {422: LIMIT, 429: 50 - LIMIT}, statuses
    assert checks == LIMIT


async def _user(app: Quart, username: str) -> User:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        return (await session.execute(select(User).where(User.username == username))).scalar_one()
