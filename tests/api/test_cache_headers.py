"""What the service tells caches and clients.

- Every response to a caller with credentials (bearer or cookie) is ``private``,
  the guards' cache hits and 304s included, so no shared cache keeps one user's
  answer for another; a response that shows a secret or sets the cookie is
  ``no-store``.
- Every 429 carries ``RateLimit``, ``RateLimit-Policy`` and ``Retry-After``.
- ``/openapi.json`` is built once per app, then served as the same bytes with an ETag.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_api.api.openapi import ApiOpenAPIProvider
from quart_api.settings import RateSpec
from tests.api.conftest import PASSWORD, Bearer, MakeUser, make_app, user_maker
from tests.api.helpers import logged_in

USERS = "/api/v1/users"


def _private(cache_control: str | None) -> bool:
    directives = {d.strip().lower() for d in (cache_control or "").split(",")}
    return bool(directives & {"private", "no-store"})


async def test_every_response_to_a_caller_with_credentials_is_private_cache_hits_included(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    auth = await bearer(alice)
    cookie_client = await logged_in(app, "bob")
    paths = [
        f"{USERS}/current",
        USERS,
        f"{USERS}/{alice.id}",
        f"{USERS}/{bob.id}",
        "/api/v1/auth/tokens",
        f"{USERS}/current/share",
        f"{USERS}/00000000-0000-0000-0000-000000000000",  # 404
    ]
    seen: list[tuple[str, str, int, str | None, str | None]] = []
    for who, caller, headers in (("bearer", client, auth), ("cookie", cookie_client, {})):
        for path in paths:
            for _ in range(2):  # the second read of a cached route is a cache hit
                response = await caller.get(path, headers=headers)
                seen.append(
                    (
                        who,
                        path,
                        response.status_code,
                        response.headers.get("X-Cache"),
                        response.headers.get("Cache-Control"),
                    )
                )
        etag = (await caller.get(f"{USERS}/current", headers=headers)).headers["ETag"]
        revalidated = await caller.get(
            f"{USERS}/current", headers={**headers, "If-None-Match": etag}
        )
        assert revalidated.status_code == 304
        assert _private(revalidated.headers.get("Cache-Control")), who
    assert any(x_cache == "hit" for _, _, _, x_cache, _ in seen), "no cache hit was checked"
    not_private = [s for s in seen if not _private(s[4])]
    assert not not_private, not_private


async def test_responses_that_show_a_secret_or_set_the_cookie_are_no_store(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    token = await client.post(
        "/api/v1/auth/tokens", json={"name": "ci", "scopes": ["users:read"]}, headers=auth
    )
    share = await client.post(f"{USERS}/current/share", headers=auth)
    shared = await app.test_client().get(
        "/api/v1/share/" + (await share.get_json())["data"]["token"]
    )
    login = await app.test_client().post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    session = await logged_in(app, "alice")
    logout = await session.post("/api/v1/auth/logout")
    for response in (token, share, shared, login, logout):
        assert response.status_code < 300, await response.get_data(as_text=True)
        assert response.headers["Cache-Control"] == "no-store", response.headers


async def test_every_429_carries_ratelimit_headers_and_retry_after(tmp_path: Path) -> None:
    """The API limit, the sign-up limit, the login limit and the login ban."""
    app = await make_app(
        tmp_path,
        api_rate_limit=RateSpec(2, 60),
        signup_rate_limit=RateSpec(1, 3600),
        login_rate_limit=RateSpec(3, 60),
        protect_limit=RateSpec(1, 3600),
    )
    async with app.test_app():
        await user_maker(app)("alice")
        client = app.test_client()
        refused = []
        for _ in range(3):
            last = await client.get(USERS)
        refused.append(last)
        for n in range(2):
            last = await client.post(USERS, json={"username": f"new{n}", "password": PASSWORD})
        refused.append(last)
        # One wrong password (401) bans the client's logins (PROTECT_LIMIT 1): then
        # 429s that no rate limit sent.
        for n in range(5):
            last = await client.post(
                "/api/v1/auth/login", json={"username": "alice", "password": "wrong guess"}
            )
            if n:
                refused.append(last)
    assert [r.status_code for r in refused] == [429] * 6, [r.status_code for r in refused]
    for response in refused:
        assert response.content_type == "application/problem+json"
        assert int(response.headers["Retry-After"]) >= 1
        assert ";r=0;" in response.headers["RateLimit"], response.headers
        assert ";q=" in response.headers["RateLimit-Policy"], response.headers


async def test_openapi_json_is_built_once_and_revalidated_by_its_etag(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = 0
    build = ApiOpenAPIProvider.schema

    def counting(self: ApiOpenAPIProvider) -> object:
        nonlocal builds
        builds += 1
        return build(self)

    monkeypatch.setattr(ApiOpenAPIProvider, "schema", counting)
    client = app.test_client()
    first = await client.get("/openapi.json")
    bodies = [await (await client.get("/openapi.json")).get_data() for _ in range(5)]
    etag = first.headers["ETag"]
    revalidated = await client.get("/openapi.json", headers={"If-None-Match": etag})
    assert builds == 1
    assert first.status_code == 200
    assert first.content_type == "application/json"
    assert bodies == [await first.get_data()] * 5
    assert etag[0] == etag[-1] == '"'
    assert revalidated.status_code == 304
    assert await revalidated.get_data() == b""
    document = await first.get_json()
    assert "/api/v1/users/current/share/{link_id}" in document["paths"]


async def test_a_response_to_a_caller_with_credentials_is_private_no_cache_and_varies_on_them(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    """Bearer and cookie callers alike, the guards' cache miss and hit alike."""
    auth = await bearer(await make_user("alice"))
    cookie_client = await logged_in(app, "alice")
    for caller, headers in ((client, auth), (cookie_client, {})):
        for _ in range(2):
            response = await caller.get(f"{USERS}/current", headers=headers)
            assert response.status_code == 200
            assert response.headers.getlist("Cache-Control") == ["private, no-cache"]
            assert response.headers.getlist("Vary")[-1] == "Authorization, Cookie"


async def test_a_views_own_cache_control_is_kept_for_a_caller_with_credentials(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    response = await client.post(
        "/api/v1/auth/tokens", json={"name": "ci", "scopes": ["users:read"]}, headers=auth
    )
    assert response.status_code == 201
    assert response.headers.getlist("Cache-Control") == ["no-store"]
    assert response.headers.getlist("Vary")[-1] == "Authorization, Cookie"


async def test_a_response_that_sets_or_deletes_the_cookie_is_only_no_store(
    app: Quart, make_user: MakeUser
) -> None:
    """No ``private`` beside it and no ``Vary`` added: the cookie itself must not be kept."""
    await make_user("alice")
    login = await app.test_client().post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    logout = await (await logged_in(app, "alice")).post("/api/v1/auth/logout")
    for response in (login, logout):
        assert "Set-Cookie" in response.headers
        assert response.headers.getlist("Cache-Control") == ["no-store"]
        assert "Authorization, Cookie" not in response.headers.getlist("Vary")


async def test_a_response_to_a_caller_without_credentials_gets_no_private_headers(
    client: Client,
) -> None:
    for path in ("/healthz", USERS):  # a public route, and a 401
        response = await client.get(path)
        assert "private" not in response.headers.get("Cache-Control", "")
        assert "Authorization, Cookie" not in response.headers.getlist("Vary")
