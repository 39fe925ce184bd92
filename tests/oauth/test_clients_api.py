"""``/api/v1/oauth/clients``: registering and managing apps (RFC 7591 metadata)."""

from __future__ import annotations

import pytest
from quart import Quart
from sqlalchemy import select

from quart_api.db import Database
from quart_api.models import OAuthClient, User, hash_secret
from tests.api.conftest import Bearer
from tests.api.helpers import assert_problem, unchanged_database
from tests.oauth.helpers import REDIRECT_URI, OAuthTester, basic

CLIENTS = "/api/v1/oauth/clients"


async def test_confidential_client_gets_its_secret_once_stored_hashed(
    oauth: OAuthTester, app: Quart
) -> None:
    response = await oauth.api.post(
        CLIENTS,
        json={"client_name": "Printer", "redirect_uris": [REDIRECT_URI],
              "token_endpoint_auth_method": "client_secret_basic", "scope": "users:read"},
        headers=oauth.developer_auth,
    )  # fmt: skip
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    data = (await response.get_json())["data"]
    assert data["client_secret_expires_at"] == 0
    assert data["scope"] == "users:read"
    assert data["grant_types"] == ["authorization_code", "refresh_token"]
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        stored = (await session.execute(select(OAuthClient))).scalar_one()
    assert stored.secret_hash == hash_secret(data["client_secret"])
    shown = await oauth.api.get(f"{CLIENTS}/{data['client_id']}", headers=oauth.developer_auth)
    assert "client_secret" not in (await shown.get_json())["data"]
    listed = await (await oauth.api.get(CLIENTS, headers=oauth.developer_auth)).get_json()
    assert [c["client_id"] for c in listed["data"]] == [data["client_id"]]
    assert listed["total"] == 1
    assert "client_secret" not in listed["data"][0]


async def test_registration_defaults_to_basic_authentication_and_every_app_scope(
    oauth: OAuthTester,
) -> None:
    response = await oauth.api.post(
        CLIENTS, json={"client_name": "A", "redirect_uris": [REDIRECT_URI]},
        headers=oauth.developer_auth,
    )  # fmt: skip
    data = (await response.get_json())["data"]
    assert data["token_endpoint_auth_method"] == "client_secret_basic"
    assert data["scope"] == "users:read users:write"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"redirect_uris": ["http://app.example.com/cb"]}, "redirect_uris"),
        ({"redirect_uris": ["http://localhost:8080/cb"]}, "redirect_uris"),
        ({"redirect_uris": ["https://app.example.com/cb#frag"]}, "redirect_uris"),
        ({"redirect_uris": ["/relative"]}, "redirect_uris"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uris"),
        ({"redirect_uris": ["https://user:pw@app.example.com/cb"]}, "redirect_uris"),
        ({"redirect_uris": ["https://app.example.com/a b"]}, "redirect_uris"),
        ({"redirect_uris": []}, "redirect_uris"),
        ({"redirect_uris": "https://app.example.com/cb"}, "redirect_uris"),
        ({"redirect_uris": [f"https://a.example/{i}" for i in range(11)]}, "redirect_uris"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "token_endpoint_auth_method"),
        ({"scope": "tokens:write"}, "scope"),
        ({"scope": "admin"}, "scope"),
        ({"scope": ""}, "scope"),
        ({"scope": ["users:read"]}, "scope"),
        ({"client_name": ""}, "client_name"),
        ({"client_name": "x" * 101}, "client_name"),
        ({"grant_types": ["password"]}, "grant_types"),
    ],
)
async def test_invalid_registration_is_422_naming_the_field_and_writes_nothing(
    oauth: OAuthTester, app: Quart, body: dict[str, object], field: str
) -> None:
    full = {"client_name": "A", "redirect_uris": [REDIRECT_URI], **body}
    async with unchanged_database(app):
        response = await oauth.api.post(CLIENTS, json=full, headers=oauth.developer_auth)
    await assert_problem(response, 422, fields=[field])


async def test_missing_fields_are_named(oauth: OAuthTester) -> None:
    response = await oauth.api.post(CLIENTS, json={}, headers=oauth.developer_auth)
    await assert_problem(response, 422, fields=["client_name", "redirect_uris"])


async def test_loopback_and_https_redirect_uris_are_accepted(oauth: OAuthTester) -> None:
    app = await oauth.register(
        redirect_uris=["http://127.0.0.1/cb", "http://[::1]:8080/cb", "https://a.example/x?y=1"]
    )
    assert len(app["redirect_uris"]) == 3


async def test_owner_updates_name_uris_and_scope_but_not_the_auth_method(
    oauth: OAuthTester, app: Quart
) -> None:
    registered = await oauth.register()
    path = f"{CLIENTS}/{registered['client_id']}"
    patched = await oauth.api.patch(
        path, json={"client_name": "Renamed", "redirect_uris": ["https://b.example/cb"],
                    "scope": "users:read"},
        headers=oauth.developer_auth,
    )  # fmt: skip
    data = (await patched.get_json())["data"]
    assert (data["client_name"], data["redirect_uris"], data["scope"]) == (
        "Renamed", ["https://b.example/cb"], "users:read"
    )  # fmt: skip
    async with unchanged_database(app):
        method = await oauth.api.patch(
            path, json={"token_endpoint_auth_method": "client_secret_post"},
            headers=oauth.developer_auth,
        )  # fmt: skip
        await assert_problem(method, 422, fields=["token_endpoint_auth_method"])
        nulls = await oauth.api.patch(
            path, json={"client_name": None, "scope": None}, headers=oauth.developer_auth
        )
        await assert_problem(nulls, 422, fields=["client_name", "scope"])


async def test_another_users_app_is_403_and_unknown_is_404(
    oauth: OAuthTester, bearer: Bearer, alice: User, app: Quart
) -> None:
    registered = await oauth.register()
    path = f"{CLIENTS}/{registered['client_id']}"
    other = await bearer(alice)
    async with unchanged_database(app):
        for method in ("get", "patch", "delete"):
            kwargs = {"json": {"client_name": "Mine"}} if method == "patch" else {}
            response = await getattr(oauth.api, method)(path, headers=other, **kwargs)
            await assert_problem(response, 403)
        rotated = await oauth.api.post(f"{path}/secret", headers=other)
        await assert_problem(rotated, 403)
        for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
            response = await oauth.api.get(f"{CLIENTS}/{missing}", headers=other)
            await assert_problem(response, 404)
    listed = await (await oauth.api.get(CLIENTS, headers=other)).get_json()
    assert listed["data"] == []


async def test_rotating_a_secret_retires_the_old_one(oauth: OAuthTester) -> None:
    registered = await oauth.register(token_endpoint_auth_method="client_secret_basic")
    rotated = await oauth.api.post(
        f"{CLIENTS}/{registered['client_id']}/secret", headers=oauth.developer_auth
    )
    assert rotated.status_code == 200
    assert rotated.headers["Cache-Control"] == "no-store"
    fresh = (await rotated.get_json())["data"]["client_secret"]
    form = {"grant_type": "refresh_token", "refresh_token": "x"}
    old = await oauth.token(form, basic(registered["client_id"], registered["client_secret"]))
    assert old.status_code == 401
    new = await oauth.token(form, basic(registered["client_id"], fresh))
    assert (await new.get_json())["error"] == "invalid_grant", "authenticated, bad token"
    public = await oauth.register()
    conflict = await oauth.api.post(
        f"{CLIENTS}/{public['client_id']}/secret", headers=oauth.developer_auth
    )
    await assert_problem(conflict, 409)


async def test_deleting_an_app_ends_every_token_it_holds(oauth: OAuthTester) -> None:
    registered = await oauth.register()
    tokens = await oauth.tokens(registered)
    deleted = await oauth.api.delete(
        f"{CLIENTS}/{registered['client_id']}", headers=oauth.developer_auth
    )
    assert deleted.status_code == 204
    assert (await oauth.me(tokens["access_token"])).status_code == 401
    refreshed = await oauth.refresh(registered, tokens["refresh_token"])
    assert refreshed.status_code == 401, "the client itself is gone"


async def test_an_apps_access_token_cannot_manage_apps(oauth: OAuthTester) -> None:
    tokens = await oauth.tokens(await oauth.register(), scope="users:read users:write")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    response = await oauth.api.post(
        CLIENTS, json={"client_name": "Spawn", "redirect_uris": [REDIRECT_URI]}, headers=headers
    )
    await assert_problem(response, 403)
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    await assert_problem(await oauth.api.get("/api/v1/oauth/grants", headers=headers), 403)
    tokens_api = await oauth.api.post(
        "/api/v1/auth/tokens", json={"name": "escape", "scopes": ["users:read"]}, headers=headers
    )
    await assert_problem(tokens_api, 403)


async def test_anonymous_callers_are_401(client: object) -> None:
    response = await client.get(CLIENTS)  # type: ignore[attr-defined]
    await assert_problem(response, 401)
