"""What password hashing may cost the service: routes that hash, seen through HTTP.

- A hash runs outside any transaction and deadline: while sign-ups, logins and
  password changes wait at their hashes, reads and writes of other requests go
  through, on SQLite (one write lock) and PostgreSQL, and a hash slower than
  ``DATABASE_TIMEOUT`` still succeeds.
- At most ``PASSWORD_HASH_SLOTS`` hash at once; a request that gets no slot within
  ``PASSWORD_HASH_QUEUE_TIMEOUT`` is 503 with ``Retry-After`` and writes nothing.
- A taken name costs sign-up no hash, and sign-up has its own per-IP limit.
- Under a storm of sign-ups, logins and password changes at a production-like
  argon2 cost, a reader of ``GET /api/v1/users`` keeps getting 200s while the storm
  runs.

Hashes wait at a gate the test opens (``GatedHasher``), so what overlaps what is
arranged by events, not by timing.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quart_api import passwords
from quart_api.settings import RateSpec
from tests.api.conftest import PASSWORD, bearer_maker, make_app, user_maker
from tests.api.helpers import GatedHasher, assert_problem, count, unchanged_database

USERS = "/api/v1/users"
LOGIN = "/api/v1/auth/login"
CHANGE = "/api/v1/users/current/password"
NEW_PASSWORD = "a brand new passphrase"
#: OWASP's argon2id baseline (19 MiB, 2 passes): production-like, yet a storm of a
#: few dozen hashes fits the suite's time.
PRODUCTION_LIKE = {"argon2_time_cost": 2, "argon2_memory_cost": 19456, "argon2_parallelism": 1}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], GatedHasher]]:
    """The hasher behind a gate; installed after the app (its factory configures argon2)."""
    holder: list[GatedHasher] = []

    def install() -> GatedHasher:
        hasher = GatedHasher(passwords._hasher)
        monkeypatch.setattr(passwords, "_hasher", hasher)
        holder.append(hasher)
        return hasher

    yield install
    for hasher in holder:
        hasher.open()


async def test_sign_up_of_a_taken_name_is_409_without_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app(tmp_path)
    async with app.test_app():
        await user_maker(app)("alice")
        hasher = GatedHasher(passwords._hasher)
        hasher.open()
        monkeypatch.setattr(passwords, "_hasher", hasher)
        async with unchanged_database(app):
            taken = await app.test_client().post(
                USERS, json={"username": "ALICE", "password": PASSWORD}
            )
            await assert_problem(taken, 409, detail="taken")
    assert hasher.calls == 0


async def test_requests_waiting_for_a_hash_hold_no_database_lock_nor_deadline(
    tmp_path: Path, database_url: str, gated: Callable[[], GatedHasher]
) -> None:
    """A password change, a login and a sign-up wait at their hashes, longer than
    ``DATABASE_TIMEOUT``; meanwhile a read and a write of other requests succeed,
    and once the hashes run, all three succeed too."""
    app = await make_app(
        tmp_path, database_url=database_url, database_timeout=0.5, password_hash_slots=4
    )
    async with app.test_app():
        alice = await user_maker(app)("alice")
        bob = await user_maker(app)("bob")
        alice_auth = await bearer_maker(app)(alice)
        bob_auth = await bearer_maker(app)(bob)
        hasher = gated()
        client = app.test_client()
        waiting = [
            asyncio.ensure_future(
                client.post(
                    CHANGE,
                    json={"old_password": PASSWORD, "new_password": NEW_PASSWORD},
                    headers=alice_auth,
                )
            ),
            asyncio.ensure_future(
                client.post(LOGIN, json={"username": "bob", "password": PASSWORD})
            ),
            asyncio.ensure_future(
                client.post(USERS, json={"username": "carol", "password": PASSWORD})
            ),
        ]
        await hasher.wait_running(3)
        read = await client.get(USERS, headers=bob_auth)
        write = await client.patch(
            f"{USERS}/current", json={"full_name": "Bob B"}, headers=bob_auth
        )
        assert hasher.running == 3, "the hashes were still waiting during the read and write"
        await asyncio.sleep(1.0)  # the hashes outlast DATABASE_TIMEOUT (0.5 s)
        hasher.open()
        changed, logged, signed = await asyncio.gather(*waiting)
    assert read.status_code == 200, await read.get_data(as_text=True)
    assert write.status_code == 200, await write.get_data(as_text=True)
    assert changed.status_code == 204, await changed.get_data(as_text=True)
    assert logged.status_code == 200, await logged.get_data(as_text=True)
    assert signed.status_code == 201, await signed.get_data(as_text=True)


async def test_a_request_that_gets_no_hashing_slot_is_503_with_retry_after(
    tmp_path: Path, gated: Callable[[], GatedHasher]
) -> None:
    app = await make_app(tmp_path, password_hash_slots=1, password_hash_queue_timeout=0.05)
    async with app.test_app():
        alice = await user_maker(app)("alice", admin=True)
        auth = await bearer_maker(app)(alice)
        hasher = gated()
        client = app.test_client()
        holder = asyncio.ensure_future(
            client.post(USERS, json={"username": "first", "password": PASSWORD})
        )
        await hasher.wait_running(1)
        async with unchanged_database(app):
            refused = [
                await client.post(USERS, json={"username": "second", "password": PASSWORD}),
                await client.post(LOGIN, json={"username": "alice", "password": PASSWORD}),
                await client.post(
                    CHANGE,
                    json={"old_password": PASSWORD, "new_password": NEW_PASSWORD},
                    headers=auth,
                ),
                await client.put(
                    f"{USERS}/by-username/dave", json={"password": PASSWORD}, headers=auth
                ),
            ]
        hasher.open()
        first = await holder
    for response in refused:
        await assert_problem(response, 503, detail="retry")
        assert response.headers["Retry-After"] == "1"
        assert "RateLimit" in response.headers
    assert first.status_code == 201
    assert hasher.calls == 1


async def test_sign_up_is_limited_per_address_and_a_forged_forwarded_for_gets_no_new_budget(
    tmp_path: Path,
) -> None:
    app = await make_app(tmp_path, signup_rate_limit=RateSpec(3, 3600))
    async with app.test_app():
        client = app.test_client()
        statuses = [
            (
                await client.post(
                    USERS,
                    json={"username": f"user{n}", "password": PASSWORD},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                )
            ).status_code
            for n in range(5)
        ]
        refused = await client.post(USERS, json={"username": "late", "password": PASSWORD})
        assert await count(app, "users") == 3
        # Other routes keep their own budget.
        assert (await client.get("/api/v1/share/unknown")).status_code == 404
    assert statuses == [201, 201, 201, 429, 429]
    await assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert re.search(r'"signup-ip[^"]*";r=0;', refused.headers["RateLimit"])
    assert re.search(r'"signup-ip[^"]*";q=3;w=3600', refused.headers["RateLimit-Policy"])


async def test_a_storm_of_hashing_requests_never_stalls_a_reader(
    tmp_path: Path, database_url: str
) -> None:
    """Sign-ups (half of them for taken names), logins and password changes at a
    production-like argon2 cost, all at once, while one client keeps reading the
    user list: every read is 200, reads keep completing while the storm runs, and no
    storm request fails for anything but its own reason."""
    app = await make_app(
        tmp_path,
        database_url=database_url,
        password_hash_queue_timeout=60,  # shedding has its own test: every storm hash runs
        **PRODUCTION_LIKE,
    )
    async with app.test_app():
        users = [await user_maker(app)(f"member{n}") for n in range(6)]
        reader_auth = await bearer_maker(app)(users[0])
        changers = [await bearer_maker(app)(user) for user in users[:4]]
        client = app.test_client()
        hashed: list[int] = []  # statuses of the storm's hashing requests, as they end
        reads: list[tuple[int, int, int]] = []  # (status, len(hashed) at start, at end)

        async def storm_call(request: Awaitable[Any], hashes: bool = True) -> int:
            response = await request
            if hashes:
                hashed.append(response.status_code)
            return int(response.status_code)

        taken = [
            storm_call(
                client.post(USERS, json={"username": f"MEMBER{n % 6}", "password": PASSWORD}),
                hashes=False,
            )
            for n in range(12)
        ]
        calls = [
            *(
                client.post(USERS, json={"username": f"new{n}", "password": PASSWORD})
                for n in range(12)
            ),
            *(
                client.post(LOGIN, json={"username": f"member{n}", "password": PASSWORD})
                for n in range(4, 6)
            ),
            *(
                client.post(LOGIN, json={"username": f"member{n}", "password": "wrong guess"})
                for n in range(4, 6)
            ),
            *(
                client.post(
                    CHANGE,
                    json={"old_password": PASSWORD, "new_password": NEW_PASSWORD},
                    headers=auth,
                )
                for auth in changers
            ),
        ]
        storm = asyncio.gather(*taken, *(storm_call(c) for c in calls))
        for n in range(1000):  # bounded: the storm ends long before
            if storm.done():
                break
            before = len(hashed)
            # A new page size each time: a cache miss, so the read reaches the database.
            response = await client.get(f"{USERS}?per_page={n % 100 + 1}", headers=reader_auth)
            reads.append((response.status_code, before, len(hashed)))
        statuses = Counter(await asyncio.wait_for(storm, timeout=120))
    assert statuses == {201: 12, 409: 12, 200: 2, 401: 2, 204: 4}, statuses
    assert reads, "the storm ended before the first read"
    assert [status for status, _, _ in reads] == [200] * len(reads)
    during = [r for r in reads if r[2] < len(calls)]
    assert len(during) >= 3, f"reads stalled behind the storm: {reads}"
    # A read waits for nobody's hash: while one read is in flight, a few storm
    # requests may finish (the storm's start competes for connections too), never
    # half of the storm.
    assert max(end - start for _, start, end in reads) <= len(calls) // 2, reads


async def test_two_password_changes_verified_at_once_do_not_both_win(
    tmp_path: Path, database_url: str, gated: Callable[[], GatedHasher]
) -> None:
    """Both requests verify the old password before either writes (they wait at the
    gate together); the second to write finds the password changed: 409, not a lost
    update that silently replaces the first one's new password."""
    app = await make_app(tmp_path, database_url=database_url, password_hash_slots=2)
    async with app.test_app():
        alice = await user_maker(app)("alice")
        auths = [await bearer_maker(app)(alice) for _ in range(2)]
        hasher = gated()
        client = app.test_client()
        changes = [
            asyncio.ensure_future(
                client.post(
                    CHANGE,
                    json={"old_password": PASSWORD, "new_password": f"new passphrase {n}"},
                    headers=auth,
                )
            )
            for n, auth in enumerate(auths)
        ]
        await hasher.wait_running(2)  # both verifying the old password
        hasher.open()
        responses = await asyncio.gather(*changes)
        statuses = sorted(r.status_code for r in responses)
        logins = [
            (
                await app.test_client().post(
                    LOGIN, json={"username": "alice", "password": f"new passphrase {n}"}
                )
            ).status_code
            for n in range(2)
        ]
    assert statuses == [204, 409], [await r.get_data(as_text=True) for r in responses]
    assert sorted(logins) == [200, 401]  # exactly the winner's new password works
