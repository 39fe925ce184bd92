"""Login, logout, session cookies, bearer tokens, scopes and the API's rate limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_api import passwords
from quart_api.api import sessions
from quart_api.auth import KNOWN_SCOPES
from quart_api.db import Database
from quart_api.models import ApiToken, User, utcnow
from quart_api.settings import RateSpec
from tests.api.conftest import PASSWORD, Bearer, MakeUser, make_app
from tests.api.helpers import assert_problem, logged_in, session_cookie, unchanged_database

LOGIN = "/api/v1/auth/login"
LOGOUT = "/api/v1/auth/logout"
CURRENT = "/api/v1/users/current"


async def _token(app: Quart, user: User, **changes: object) -> dict[str, str]:
    """A bearer header for a token of `user` with column values changed (expired...)."""
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        token, secret = ApiToken.issue(user.id, "t", ["users:read"])
        for name, value in changes.items():
            setattr(token, name, value)
        session.add(token)
        await session.commit()
    return {"Authorization": f"Bearer {secret}"}


# -- login -------------------------------------------------------------------


async def test_login_answers_the_user_and_a_session_cookie_that_authenticates(
    app: Quart, client: Client, make_user: MakeUser
) -> None:
    await make_user("alice")
    response = await client.post(LOGIN, json={"username": "ALICE", "password": PASSWORD})
    assert response.status_code == 200
    user = (await response.get_json())["data"]
    assert (user["username"], user["email"]) == ("alice", "alice@example.org")
    assert "QUART_AUTH=" in response.headers["Set-Cookie"]
    current = await client.get(CURRENT)
    assert current.status_code == 200
    assert (await current.get_json())["data"]["id"] == user["id"]


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong password"), ("nobody", PASSWORD)]
)
async def test_login_with_a_wrong_password_or_unknown_user_is_the_same_401(
    app: Quart, client: Client, make_user: MakeUser, username: str, password: str
) -> None:
    await make_user("alice")
    async with unchanged_database(app):
        response = await client.post(LOGIN, json={"username": username, "password": password})
        body = await assert_problem(response, 401, detail="wrong username or password")
    assert "Set-Cookie" not in response.headers
    assert password not in str(body)


async def test_an_unknown_username_costs_a_password_verification_too(
    app: Quart, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    real_verify = sessions.averify_password

    async def recording_verify(password_hash: str, password: str) -> bool:
        verified.append(password_hash)
        return await real_verify(password_hash, password)

    monkeypatch.setattr(sessions, "averify_password", recording_verify)
    response = await client.post(LOGIN, json={"username": "nobody", "password": PASSWORD})
    await assert_problem(response, 401)
    assert verified == [passwords.dummy_hash()]


async def test_login_upgrades_an_old_hash_without_ending_sessions(
    app: Quart, make_user: MakeUser
) -> None:
    alice = await make_user("alice")
    earlier = await logged_in(app, "alice")
    passwords.configure(time_cost=2, memory_cost=16, parallelism=1)
    try:
        await logged_in(app, "alice")
    finally:
        passwords.configure(time_cost=1, memory_cost=8, parallelism=1)
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        upgraded = await session.get(User, alice.id)
    assert upgraded is not None
    assert upgraded.password_hash != alice.password_hash
    assert "t=2" in (upgraded.password_hash or "")
    assert (await earlier.get(CURRENT)).status_code == 200


async def test_an_account_without_a_password_cannot_log_in(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    admin = await bearer(await make_user("root", admin=True))
    created = await client.put("/api/v1/users/by-username/nopass", json={}, headers=admin)
    assert created.status_code == 201
    for password in ("", PASSWORD):
        response = await client.post(LOGIN, json={"username": "nopass", "password": password})
        await assert_problem(response, 401)


async def test_login_is_blocked_after_protect_limit_failures(tmp_path: Path) -> None:
    app = await make_app(tmp_path, protect_limit=RateSpec(3, 3600))
    async with app.test_app():
        database: Database = app.extensions["database"]
        async with database.sessionmaker() as session:
            session.add(User().from_dict(username="alice", password=PASSWORD))
            await session.commit()
        client = app.test_client()
        wrong = {"username": "alice", "password": "wrong password"}
        failures = [(await client.post(LOGIN, json=wrong)).status_code for _ in range(3)]
        blocked = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert failures == [401, 401, 401]
    await assert_problem(blocked, 429)
    assert int(blocked.headers["Retry-After"]) > 0
    assert "Set-Cookie" not in blocked.headers


async def test_a_successful_login_clears_earlier_failures(tmp_path: Path) -> None:
    app = await make_app(tmp_path, protect_limit=RateSpec(2, 3600))
    async with app.test_app():
        database: Database = app.extensions["database"]
        async with database.sessionmaker() as session:
            session.add(User().from_dict(username="alice", password=PASSWORD))
            await session.commit()
        client = app.test_client()
        wrong = {"username": "alice", "password": "wrong password"}
        right = {"username": "alice", "password": PASSWORD}
        statuses = [
            (await client.post(LOGIN, json=body)).status_code
            for body in (wrong, right, wrong, right)
        ]
    assert statuses == [401, 200, 401, 200]


async def test_login_is_rate_limited_per_address(tmp_path: Path) -> None:
    app = await make_app(tmp_path, login_rate_limit=RateSpec(2, 60))
    async with app.test_app():
        client = app.test_client()
        body = {"username": "nobody", "password": PASSWORD}
        statuses = [(await client.post(LOGIN, json=body)).status_code for _ in range(3)]
        limited = await client.post(LOGIN, json=body)
    assert statuses == [401, 401, 429]
    await assert_problem(limited, 429)


async def test_login_body_errors_are_400_415_and_422(app: Quart, client: Client) -> None:
    async with unchanged_database(app):
        bad = await client.post(LOGIN, data=b"{", headers={"Content-Type": "application/json"})
        await assert_problem(bad, 400)
        form = await client.post(LOGIN, form={"username": "a", "password": PASSWORD})
        await assert_problem(form, 415)
        missing = await client.post(LOGIN, json={"username": "alice"})
        await assert_problem(missing, 422, fields=["password"])
        typed = await client.post(LOGIN, json={"username": 1, "password": PASSWORD, "x": 1})
        body = await assert_problem(typed, 422, fields=["username", "x"])
    assert PASSWORD not in str(body)


# -- cookies -----------------------------------------------------------------


async def test_logout_is_204_and_the_old_cookie_replayed_is_401(
    app: Quart, make_user: MakeUser
) -> None:
    await make_user("alice")
    client = await logged_in(app, "alice")
    cookie = session_cookie(client)
    response = await client.post(LOGOUT)
    assert response.status_code == 204
    assert "QUART_AUTH=;" in response.headers["Set-Cookie"]
    replay = await app.test_client().get(CURRENT, headers={"Cookie": f"QUART_AUTH={cookie}"})
    await assert_problem(replay, 401)
    await assert_problem(await client.get(CURRENT), 401)


async def test_a_tampered_cookie_is_not_a_session(app: Quart, make_user: MakeUser) -> None:
    await make_user("alice")
    cookie = session_cookie(await logged_in(app, "alice"))
    forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    response = await app.test_client().get(CURRENT, headers={"Cookie": f"QUART_AUTH={forged}"})
    await assert_problem(response, 401)


async def test_logout_without_a_session_is_204(client: Client) -> None:
    assert (await client.post(LOGOUT)).status_code == 204


async def test_production_cookies_are_secure_httponly_and_samesite(tmp_path: Path) -> None:
    app = await make_app(tmp_path, app_env="production", secret_key="k" * 40)
    async with app.test_app():
        database: Database = app.extensions["database"]
        async with database.sessionmaker() as session:
            session.add(User().from_dict(username="alice", password=PASSWORD))
            await session.commit()
        response = await app.test_client().post(
            LOGIN, json={"username": "alice", "password": PASSWORD}, scheme="https"
        )
    assert response.status_code == 200
    attributes = {
        a.strip().split("=")[0].lower() for a in response.headers["Set-Cookie"].split(";")
    }
    assert {"secure", "httponly", "samesite"} <= attributes
    assert "samesite=strict" in response.headers["Set-Cookie"].lower()


async def test_development_cookies_are_httponly_and_samesite(
    client: Client, make_user: MakeUser
) -> None:
    await make_user("alice")
    response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    cookie = response.headers["Set-Cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie


async def test_a_cookie_session_holds_every_scope(app: Quart, make_user: MakeUser) -> None:
    await make_user("alice")
    client = await logged_in(app, "alice")
    created = await client.post("/api/v1/auth/tokens", json={"name": "t", "scopes": ["users:read"]})
    assert created.status_code == 201
    assert (await client.patch(CURRENT, json={"full_name": "A"})).status_code == 200


# -- bearer tokens -----------------------------------------------------------


async def test_a_bearer_token_authenticates_and_records_its_use(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    response = await client.get(CURRENT, headers=auth)
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    database: Database = app.extensions["database"]
    await app.shutdown()  # waits for the background task that records the use
    async with database.sessionmaker() as session:
        token = (await session.execute(ApiToken.__table__.select())).one()
    assert token.last_used_at is not None


@pytest.mark.parametrize(
    "changes",
    [
        {"expires_at": utcnow() - timedelta(seconds=1)},
        {"revoked_at": utcnow() - timedelta(seconds=1)},
    ],
    ids=["expired", "revoked"],
)
async def test_an_expired_or_revoked_token_is_401_invalid_token(
    app: Quart, client: Client, make_user: MakeUser, changes: dict[str, object]
) -> None:
    auth = await _token(app, await make_user("alice"), **changes)
    async with unchanged_database(app):
        response = await client.get(CURRENT, headers=auth)
        await assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_an_unknown_token_is_401_even_with_a_valid_cookie(
    app: Quart, make_user: MakeUser
) -> None:
    await make_user("alice")
    client = await logged_in(app, "alice")
    response = await client.get(CURRENT, headers={"Authorization": "Bearer " + "x" * 43})
    await assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "header", ["Basic YWxpY2U6cGFzcw==", "Bearer", "Bearer ", "Token abc", "bearer"]
)
async def test_a_malformed_authorization_header_is_401_with_a_bearer_challenge(
    app: Quart, client: Client, header: str
) -> None:
    async with unchanged_database(app):
        response = await client.get(CURRENT, headers={"Authorization": header})
        await assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_anonymous_access_is_401_with_a_bearer_challenge(client: Client) -> None:
    response = await client.get(CURRENT)
    await assert_problem(response, 401, detail="authentication")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_missing_scope_is_403_naming_it_in_the_challenge(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"), ("users:write",))
    response = await client.get(CURRENT, headers=auth)
    await assert_problem(response, 403, detail="users:read")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="users:read"' in challenge


# -- rate limits on every route -------------------------------------------------


def _api_endpoints(app: Quart) -> dict[str, tuple[str, str]]:
    """One (method, path) per /api/v1 endpoint, path parameters filled in."""
    unknown = "00000000-0000-4000-8000-000000000000"
    samples = {"user_ref": unknown, "token_id": unknown}
    endpoints: dict[str, tuple[str, str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", samples.get(name, "sample"))
        endpoints[rule.endpoint] = (method, path)
    return endpoints


async def test_every_api_route_sends_ratelimit_headers_and_is_429_past_its_limit(
    tmp_path: Path,
) -> None:
    app = await make_app(tmp_path, api_rate_limit=RateSpec(2, 60), login_rate_limit=RateSpec(2, 60))
    async with app.test_app():
        database: Database = app.extensions["database"]
        async with database.sessionmaker() as session:
            user = User().from_dict(username="root", password=PASSWORD)
            user.is_admin = True
            session.add(user)
            await session.flush()
            token, secret = ApiToken.issue(user.id, "t", list(KNOWN_SCOPES))
            session.add(token)
            await session.commit()
        auth = {"Authorization": f"Bearer {secret}"}
        client = app.test_client()
        endpoints = _api_endpoints(app)
        assert len(endpoints) >= 12
        for endpoint, (method, path) in endpoints.items():
            first = await client.open(path, method=method, json={}, headers=auth)
            assert "RateLimit" in first.headers, endpoint
            assert "RateLimit-Policy" in first.headers, endpoint
            await client.open(path, method=method, json={}, headers=auth)
            third = await client.open(path, method=method, json={}, headers=auth)
            await assert_problem(third, 429)
            assert int(third.headers["Retry-After"]) >= 1, endpoint


async def test_a_refused_scope_still_carries_ratelimit_headers(client: Client) -> None:
    response = await client.get(CURRENT)
    assert response.status_code == 401
    assert "RateLimit" in response.headers
