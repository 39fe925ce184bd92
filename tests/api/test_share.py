"""Share links: a secret URL to a public profile; guessing them gets an IP blocked."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_api.db import Database
from quart_api.models import ShareLink, User
from quart_api.settings import RateSpec
from tests.api.conftest import PASSWORD, Bearer, MakeUser, make_app
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
