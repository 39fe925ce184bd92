"""Share links: a secret URL to a public profile; guessing them gets an IP blocked.

The owner creates links (optionally expiring), lists them without secrets and revokes
them; a dead link is a 404 like an unknown one, and a miss. A link's URL is built
from ``PUBLIC_URL`` or is a path, never from a header the client chose.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import update

from quart_api.api.share import MAX_LIVE_SHARE_LINKS
from quart_api.app import create_app
from quart_api.db import Database
from quart_api.models import ApiToken, ShareLink, User, utcnow
from quart_api.settings import RateSpec, SettingsError
from quart_api.testing import PostgresServer
from tests.api.conftest import (
    PASSWORD,
    Bearer,
    MakeUser,
    bearer_maker,
    make_app,
    service_settings,
    user_maker,
)
from tests.api.helpers import assert_problem, count, unchanged_database

SHARE = "/api/v1/users/current/share"


async def test_a_share_link_shows_the_public_profile_to_anyone(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    response = await client.post(SHARE, headers=await bearer(alice))
    assert response.status_code == 201
    link = (await response.get_json())["data"]
    path = urlsplit(link["url"]).path
    assert path == f"/api/v1/share/{link['token']}"
    assert await count(app, "share_links") == 1
    public = await app.test_client().get(path)
    assert public.status_code == 200
    profile = (await public.get_json())["data"]
    assert (profile["id"], profile["username"]) == (str(alice.id), "alice")
    assert "email" not in profile
    assert "is_admin" not in profile


async def test_each_share_link_is_new_and_stored_only_hashed(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    first = (await (await client.post(SHARE, headers=auth)).get_json())["data"]["token"]
    second = (await (await client.post(SHARE, headers=auth)).get_json())["data"]["token"]
    assert first != second
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        stored = (await session.execute(ShareLink.__table__.select())).all()
    assert {row.token_hash for row in stored} == {ShareLink.hash_secret(t) for t in (first, second)}


async def test_unknown_share_tokens_are_404(app: Quart, client: Client) -> None:
    async with unchanged_database(app):
        for token in ("nope", "x" * 43, "y" * 500):
            await assert_problem(await client.get(f"/api/v1/share/{token}"), 404)


async def test_guessing_share_tokens_blocks_the_client_before_the_view(tmp_path: Path) -> None:
    app = await make_app(tmp_path, protect_limit=RateSpec(3, 3600))
    async with app.test_app():
        database: Database = app.extensions["database"]
        async with database.sessionmaker() as session:
            user = User().from_dict(username="alice", password=PASSWORD)
            session.add(user)
            await session.flush()
            link, secret = ShareLink.issue(user.id)
            session.add(link)
            await session.commit()
        client = app.test_client()
        guesses = [(await client.get(f"/api/v1/share/guess{i}")).status_code for i in range(3)]
        blocked = await client.get(f"/api/v1/share/{secret}")
    assert guesses == [404, 404, 404]
    await assert_problem(blocked, 404)


async def test_a_deleted_users_share_link_is_404(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    token = (await (await client.post(SHARE, headers=auth)).get_json())["data"]["token"]
    assert (await client.delete("/api/v1/users/current", headers=auth)).status_code == 204
    await assert_problem(await client.get(f"/api/v1/share/{token}"), 404)


async def test_creating_a_share_link_needs_users_write(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"), ("users:read",))
    async with unchanged_database(app):
        refused = await client.post(SHARE, headers=auth)
        await assert_problem(refused, 403, detail="users:write")
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        await assert_problem(await client.post(SHARE), 401)


# -- the owner's links: expiry, list, revoke, limit -------------------------------


async def _create(client: Client, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    if body:
        response = await client.post(SHARE, json=body, headers=auth)
    else:
        response = await client.post(SHARE, headers=auth)  # no body at all
    assert response.status_code == 201, await response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    data: dict[str, Any] = (await response.get_json())["data"]
    return data


async def test_a_new_link_answers_id_token_url_and_expiry(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    forever = await _create(client, auth)
    hourly = await _create(client, auth, expires_in=3600)
    assert set(forever) == {"id", "token", "url", "expires_at"}
    assert forever["expires_at"] is None
    expires_at = datetime.fromisoformat(hourly["expires_at"])
    assert abs(expires_at - (utcnow() + timedelta(hours=1))) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "body",
    [{"expires_in": 0}, {"expires_in": "60"}, {"expires_in": 10**12}, {"token": "x" * 43}],
)
async def test_a_link_with_invalid_fields_is_422_and_creates_nothing(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer, body: dict[str, Any]
) -> None:
    auth = await bearer(await make_user("alice"))
    async with unchanged_database(app):
        response = await client.post(SHARE, json=body, headers=auth)
        await assert_problem(response, 422, fields=list(body))


async def test_the_owner_lists_live_links_without_secrets(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await bearer(await make_user("alice"))
    bob = await bearer(await make_user("bob"))
    first = await _create(client, alice)
    second = await _create(client, alice, expires_in=60)
    revoked = await _create(client, alice)
    await _create(client, bob)
    assert (await client.delete(f"{SHARE}/{revoked['id']}", headers=alice)).status_code == 204
    listing = await client.get(SHARE, headers=alice)
    text = await listing.get_data(as_text=True)
    listed = (await listing.get_json())["data"]
    assert [link["id"] for link in listed] == [first["id"], second["id"]]
    assert set(listed[0]) == {"id", "created_at", "expires_at"}
    for link in (first, second, revoked):
        assert link["token"] not in text
        assert ShareLink.hash_secret(link["token"]) not in text


async def test_a_revoked_link_is_404_at_once_like_an_unknown_one(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    link = await _create(client, auth)
    assert (await app.test_client().get(link["url"])).status_code == 200
    assert (await client.delete(f"{SHARE}/{link['id']}", headers=auth)).status_code == 204
    await assert_problem(await app.test_client().get(link["url"]), 404)
    async with unchanged_database(app):
        again = await client.delete(f"{SHARE}/{link['id']}", headers=auth)
        await assert_problem(again, 404)


async def test_an_expired_link_is_404_like_an_unknown_one(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    link = await _create(client, auth, expires_in=60)
    await _expire(app, link["id"])
    unknown = await app.test_client().get("/api/v1/share/" + "z" * 43)
    expired = await app.test_client().get(link["url"])
    await assert_problem(expired, 404)
    assert await expired.get_json() == await unknown.get_json()
    assert (await (await client.get(SHARE, headers=auth)).get_json())["data"] == []


async def _expire(app: Quart, link_id: str) -> None:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        await session.execute(
            update(ShareLink)
            .where(ShareLink.id == uuid.UUID(link_id))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def test_probing_expired_and_revoked_links_gets_the_client_blocked(tmp_path: Path) -> None:
    app = await make_app(tmp_path, protect_limit=RateSpec(2, 3600))
    async with app.test_app():
        auth = await bearer_maker(app)(await user_maker(app)("alice"))
        owner = app.test_client()
        expired = await _create(owner, auth)
        revoked = await _create(owner, auth)
        live = await _create(owner, auth)
        await _expire(app, expired["id"])
        assert (await owner.delete(f"{SHARE}/{revoked['id']}", headers=auth)).status_code == 204
        prober = app.test_client()
        statuses = [
            (await prober.get(link["url"])).status_code for link in (expired, revoked, live)
        ]
    # Two dead links are two misses; then even a live link is a 404 for the prober.
    assert statuses == [404, 404, 404]


async def test_revoking_another_users_link_is_403_and_unknown_ids_404(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await bearer(await make_user("alice"))
    mallory = await bearer(await make_user("mallory"))
    link = await _create(client, alice)
    async with unchanged_database(app):
        await assert_problem(await client.delete(f"{SHARE}/{link['id']}", headers=mallory), 403)
        for link_id in ("not-a-uuid", str(uuid.uuid4())):
            await assert_problem(await client.delete(f"{SHARE}/{link_id}", headers=alice), 404)
    assert (await app.test_client().get(link["url"])).status_code == 200


async def test_a_link_made_with_a_token_never_outlives_it(
    app: Quart, client: Client, make_user: MakeUser
) -> None:
    alice = await make_user("alice")
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        token, secret = ApiToken.issue(
            alice.id, "short", ["users:read", "users:write"], timedelta(seconds=60)
        )
        session.add(token)
        await session.commit()
    link = await _create(client, {"Authorization": f"Bearer {secret}"})
    assert datetime.fromisoformat(link["expires_at"]) == token.expires_at


async def test_a_user_holds_at_most_the_live_link_limit_and_the_409_says_so(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    auth = await bearer(alice)
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        for n in range(MAX_LIVE_SHARE_LINKS + 5):
            link, _ = ShareLink.issue(alice.id)
            if n >= MAX_LIVE_SHARE_LINKS:  # dead ones do not count
                link.revoked_at = utcnow()
            session.add(link)
        await session.commit()
    async with unchanged_database(app):
        refused = await client.post(SHARE, headers=auth)
        await assert_problem(refused, 409, detail=f"{MAX_LIVE_SHARE_LINKS} live share links")
    first = (await (await client.get(SHARE, headers=auth)).get_json())["data"][0]
    assert (await client.delete(f"{SHARE}/{first['id']}", headers=auth)).status_code == 204
    await _create(client, auth)


# -- the link's URL: never from the Host header ------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"Host": "evil.example:443", "X-Forwarded-Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
        {"Forwarded": "host=evil.example;proto=https"},
    ],
)
async def test_a_forged_host_never_reaches_the_share_url(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    for public_url, expected in (
        (None, ""),
        ("https://api.example.com", "https://api.example.com"),
    ):
        directory = tmp_path / ("public" if public_url else "relative")
        directory.mkdir()
        app = await make_app(directory, public_url=public_url)
        async with app.test_app():
            auth = await bearer_maker(app)(await user_maker(app)("alice"))
            link = await _create(app.test_client(), {**auth, **headers})
        assert link["url"] == f"{expected}/api/v1/share/{link['token']}"
        assert "evil" not in link["url"]


@pytest.mark.parametrize(
    "value",
    ["api.example.com", "ftp://api.example.com", "https://api.example.com/base", "https://"],
)
def test_a_public_url_that_is_not_an_origin_fails_at_start_up_by_name(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(SettingsError, match="PUBLIC_URL"):
        create_app(service_settings(tmp_path).replace(public_url=value))


async def test_a_share_secret_never_reaches_the_service_log_when_the_database_stalls(
    tmp_path: Path,
    pg_database: str,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The 503's warning names the path it failed on, with the secret redacted."""
    app = await make_app(tmp_path, database_url=pg_database, database_timeout=0.3)
    secret = "s3cret-" + "x" * 36
    async with app.test_app():
        postgres_server.pause()
        try:
            with caplog.at_level(logging.WARNING, logger="quart_api"):
                response = await app.test_client().get(f"/api/v1/share/{secret}")
        finally:
            postgres_server.resume()
    await assert_problem(response, 503, detail="database")
    assert "/api/v1/share/[redacted]" in caplog.text
    assert secret not in caplog.text
