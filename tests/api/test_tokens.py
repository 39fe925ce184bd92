"""/api/v1/auth/tokens: shown once, listed without the secret, scoped, revocable."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_api.api.tokens import MAX_LIVE_TOKENS
from quart_api.auth import KNOWN_SCOPES
from quart_api.db import Database
from quart_api.models import ApiToken, User, hash_secret, utcnow
from tests.api.conftest import Bearer, MakeUser, bearer_maker, make_app, user_maker
from tests.api.helpers import assert_problem, count, logged_in, table_rows, unchanged_database

#: A well-formed id that no row has (fixed, so every test process collects the same ids).
UNKNOWN_ID = "3f1c2a4e-9b7d-4c1e-8f0a-2d6b5e4c3a21"

TOKENS = "/api/v1/auth/tokens"
CURRENT = "/api/v1/users/current"


async def test_a_new_token_is_shown_once_and_listed_without_its_secret(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    response = await client.post(
        TOKENS, json={"name": "ci", "scopes": ["users:read", "users:read"]}, headers=auth
    )
    assert response.status_code == 201
    created = (await response.get_json())["data"]
    assert set(created) == {
        "id",
        "name",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "token",
    }
    assert (created["name"], created["scopes"], created["expires_at"]) == (
        "ci",
        ["users:read"],
        None,
    )
    secret = created["token"]
    rows = (await table_rows(app))["api_tokens"]
    assert any(hash_secret(secret) in row for row in rows)
    assert not any(secret in row for row in rows)
    listing = await client.get(TOKENS, headers=auth)
    text = await listing.get_data(as_text=True)
    assert secret not in text
    assert hash_secret(secret) not in text
    listed = {t["id"]: t for t in (await listing.get_json())["data"]}
    assert "token" not in listed[created["id"]]
    assert listed[created["id"]]["scopes"] == ["users:read"]
    own = await client.get(CURRENT, headers={"Authorization": f"Bearer {secret}"})
    assert own.status_code == 200


async def test_expires_in_sets_the_expiry(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    response = await client.post(
        TOKENS, json={"name": "short", "scopes": ["users:read"], "expires_in": 3600}, headers=auth
    )
    expires_at = datetime.fromisoformat((await response.get_json())["data"]["expires_at"])
    assert expires_at.utcoffset() == timedelta(0)
    assert abs(expires_at - (utcnow() + timedelta(hours=1))) < timedelta(minutes=1)


async def test_a_token_cannot_carry_scopes_its_creator_lacks(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"), ("tokens:write",))
    async with unchanged_database(app):
        response = await client.post(
            TOKENS, json={"name": "x", "scopes": ["tokens:write", "users:write"]}, headers=auth
        )
        await assert_problem(response, 403, detail="users:write")


async def test_a_cookie_session_may_grant_any_known_scope(app: Quart, make_user: MakeUser) -> None:
    await make_user("alice")
    client = await logged_in(app, "alice")
    scopes = ["tokens:write", "users:read", "users:write"]
    response = await client.post(TOKENS, json={"name": "all", "scopes": scopes})
    assert response.status_code == 201
    assert (await response.get_json())["data"]["scopes"] == scopes


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "x", "scopes": ["users:delete"]}, ["scopes"]),
        ({"name": "x"}, ["scopes"]),
        ({"scopes": ["users:read"]}, ["name"]),
        ({"name": "x", "scopes": "users:read"}, ["scopes"]),
        ({"name": "x", "scopes": [1]}, ["scopes"]),
        ({"name": 7, "scopes": ["users:read"]}, ["name"]),
        ({"name": "", "scopes": ["users:read"]}, ["name"]),
        ({"name": "x" * 101, "scopes": ["users:read"]}, ["name"]),
        ({"name": "x", "scopes": ["users:read"], "expires_in": 0}, ["expires_in"]),
        ({"name": "x", "scopes": ["users:read"], "expires_in": "3600"}, ["expires_in"]),
        ({"name": "x", "scopes": ["users:read"], "expires_in": True}, ["expires_in"]),
        ({"name": "x", "scopes": ["users:read"], "expires_in": 10**12}, ["expires_in"]),
        ({"name": "x", "scopes": ["users:read"], "token_hash": "0" * 64}, ["token_hash"]),
        ({"name": "x", "scopes": ["users:read"], "user_id": str(uuid.uuid4())}, ["user_id"]),
        (
            {"name": "x", "scopes": ["users:read"], "expires_at": "2999-01-01T00:00:00Z"},
            ["expires_at"],
        ),
    ],
)
async def test_creating_a_token_with_invalid_fields_is_422_and_creates_nothing(
    app: Quart,
    client: Client,
    make_user: MakeUser,
    bearer: Bearer,
    body: dict[str, Any],
    fields: list[str],
) -> None:
    auth = await bearer(await make_user("alice"))
    async with unchanged_database(app):
        response = await client.post(TOKENS, json=body, headers=auth)
        await assert_problem(response, 422, fields=fields)


async def test_creating_a_token_from_a_bad_body_is_400_415_or_413(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    async with unchanged_database(app):
        bad = await client.post(
            TOKENS, data=b'{"name":', headers={**auth, "Content-Type": "application/json"}
        )
        await assert_problem(bad, 400)
        await assert_problem(await client.post(TOKENS, data=b"name=x", headers=auth), 415)
        huge = await client.post(TOKENS, json={"name": "x" * 70_000, "scopes": []}, headers=auth)
        await assert_problem(huge, 413)


async def test_a_revoked_token_stops_working_at_once_and_leaves_the_list(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    response = await client.post(TOKENS, json={"name": "t", "scopes": ["users:read"]}, headers=auth)
    created = (await response.get_json())["data"]
    victim = {"Authorization": f"Bearer {created['token']}"}
    assert (await client.get(CURRENT, headers=victim)).status_code == 200
    assert (await client.delete(f"{TOKENS}/{created['id']}", headers=auth)).status_code == 204
    await assert_problem(await client.get(CURRENT, headers=victim), 401)
    listed = (await (await client.get(TOKENS, headers=auth)).get_json())["data"]
    assert created["id"] not in {t["id"] for t in listed}
    await assert_problem(await client.delete(f"{TOKENS}/{created['id']}", headers=auth), 404)


@pytest.mark.parametrize("token_id", ["not-a-uuid", UNKNOWN_ID])
async def test_revoking_a_malformed_or_unknown_token_id_is_404(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer, token_id: str
) -> None:
    auth = await bearer(await make_user("alice"))
    async with unchanged_database(app):
        await assert_problem(await client.delete(f"{TOKENS}/{token_id}", headers=auth), 404)


async def test_revoking_another_users_token_is_403(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await bearer(await make_user("alice"))
    mallory = await bearer(await make_user("mallory"))
    response = await client.post(
        TOKENS, json={"name": "t", "scopes": ["users:read"]}, headers=alice
    )
    token_id = (await response.get_json())["data"]["id"]
    async with unchanged_database(app):
        await assert_problem(await client.delete(f"{TOKENS}/{token_id}", headers=mallory), 403)
    assert len((await (await client.get(TOKENS, headers=mallory)).get_json())["data"]) == 1


async def test_token_routes_need_the_tokens_write_scope(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"), ("users:read", "users:write"))
    async with unchanged_database(app):
        for method, path in (("POST", TOKENS), ("GET", TOKENS), ("DELETE", f"{TOKENS}/x")):
            response = await client.open(
                path, method=method, json={"name": "t", "scopes": []}, headers=auth
            )
            await assert_problem(response, 403, detail="tokens:write")
            assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
            anonymous = await client.open(path, method=method, json={})
            await assert_problem(anonymous, 401)
    assert await count(app, "api_tokens") == 1


async def _token_expiring_in(app: Quart, user: User, seconds: int) -> tuple[str, datetime]:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        token, secret = ApiToken.issue(
            user.id, "short", list(KNOWN_SCOPES), timedelta(seconds=seconds)
        )
        session.add(token)
        await session.commit()
    assert token.expires_at is not None
    return secret, token.expires_at


@pytest.mark.parametrize("expires_in", [None, 3600, 365 * 24 * 3600])
async def test_a_token_minted_by_a_short_lived_token_never_outlives_it(
    app: Quart, client: Client, make_user: MakeUser, expires_in: int | None
) -> None:
    secret, creator_expires = await _token_expiring_in(app, await make_user("alice"), 60)
    body: dict[str, Any] = {"name": "minted", "scopes": ["tokens:write"]}
    if expires_in is not None:
        body["expires_in"] = expires_in
    response = await client.post(TOKENS, json=body, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 201
    minted = (await response.get_json())["data"]
    assert datetime.fromisoformat(minted["expires_at"]) == creator_expires
    rows = (await table_rows(app))["api_tokens"]
    assert any(creator_expires in row and hash_secret(minted["token"]) in row for row in rows)


async def test_a_token_minted_by_a_token_may_expire_sooner(
    app: Quart, client: Client, make_user: MakeUser
) -> None:
    secret, creator_expires = await _token_expiring_in(app, await make_user("alice"), 3600)
    response = await client.post(
        TOKENS,
        json={"name": "minted", "scopes": ["users:read"], "expires_in": 60},
        headers={"Authorization": f"Bearer {secret}"},
    )
    expires_at = datetime.fromisoformat((await response.get_json())["data"]["expires_at"])
    assert expires_at < creator_expires
    assert abs(expires_at - (utcnow() + timedelta(seconds=60))) < timedelta(seconds=30)


async def _hold_tokens(app: Quart, user: User, live: int, dead: int = 0) -> None:
    """``live`` working tokens of ``user``, and ``dead`` revoked or expired ones."""
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        for n in range(live + dead):
            token, _ = ApiToken.issue(user.id, f"held {n}", ["users:read"])
            if n >= live:
                if n % 2:
                    token.revoked_at = utcnow()
                else:
                    token.expires_at = utcnow() - timedelta(seconds=1)
            session.add(token)
        await session.commit()


async def test_a_user_holds_at_most_the_live_token_limit_and_the_409_says_so(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    auth = await bearer(alice)  # the first live token
    await _hold_tokens(app, alice, MAX_LIVE_TOKENS - 1, dead=10)  # dead ones do not count
    body = {"name": "one too many", "scopes": ["users:read"]}
    async with unchanged_database(app):
        refused = await client.post(TOKENS, json=body, headers=auth)
        await assert_problem(refused, 409, detail=f"{MAX_LIVE_TOKENS} live API tokens")
    assert "revoke" in (await refused.get_json())["detail"]
    listed = (await (await client.get(TOKENS, headers=auth)).get_json())["data"]
    victim = next(t for t in listed if t["name"] == "held 0")
    assert (await client.delete(f"{TOKENS}/{victim['id']}", headers=auth)).status_code == 204
    assert (await client.post(TOKENS, json=body, headers=auth)).status_code == 201


async def test_concurrent_token_creations_cannot_overshoot_the_live_token_limit(
    tmp_path: Path, pg_database: str
) -> None:
    app = await make_app(tmp_path, database_url=pg_database)
    async with app.test_app():
        alice = await user_maker(app)("alice")
        auth = await bearer_maker(app)(alice)
        await _hold_tokens(app, alice, MAX_LIVE_TOKENS - 3)
        client = app.test_client()
        responses = await asyncio.gather(
            *(
                client.post(TOKENS, json={"name": f"race {n}", "scopes": []}, headers=auth)
                for n in range(20)
            )
        )
        statuses = Counter(r.status_code for r in responses)
        assert await count(app, "api_tokens") == MAX_LIVE_TOKENS
    assert statuses == {201: 2, 409: 18}, statuses
