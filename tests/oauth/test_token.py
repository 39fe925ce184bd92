"""``POST /oauth/token``: code redemption, refresh rotation, client authentication.

Attacks closed here (RFC 9700): code replay (and 50 concurrent redemptions), a
missing or wrong PKCE verifier, another client's code, mix-up of clients, a wrong
redirect URI, refresh token replay, scope escalation on refresh, revoked grants,
the password and client-credentials grants, guessing client secrets and codes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from quart import Quart
from quart.wrappers import Response
from sqlalchemy import func, select, update

from quart_api.db import Database
from quart_api.models import ApiToken, OAuthGrant, OAuthRefreshToken, User, utcnow
from quart_api.settings import RateSpec
from tests.api.conftest import PASSWORD, bearer_maker, user_maker
from tests.oauth.conftest import AppMaker
from tests.oauth.helpers import OAuthTester, basic


async def oauth_error(response: Response, status: int, error: str) -> dict[str, Any]:
    body: dict[str, Any] = await response.get_json()
    assert response.status_code == status, body
    assert body["error"] == error, body
    assert body["error_description"]
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    return body


async def access_tokens(app: Quart) -> list[ApiToken]:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        query = select(ApiToken).where(ApiToken.grant_id.is_not(None))
        return list((await session.execute(query)).scalars())


async def run_sql(app: Quart, statement: Any) -> None:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        await session.execute(statement)
        await session.commit()


# -- authorization codes --------------------------------------------------------------


async def test_code_replay_is_refused_and_revokes_the_tokens_it_issued(
    oauth: OAuthTester,
) -> None:
    app = await oauth.register()
    authorization = oauth.request(app)
    await oauth.code(authorization)
    first = await oauth.exchange(app, authorization)
    tokens = await first.get_json()
    assert (await oauth.me(tokens["access_token"])).status_code == 200
    await oauth_error(await oauth.exchange(app, authorization), 400, "invalid_grant")
    assert (await oauth.me(tokens["access_token"])).status_code == 401
    refreshed = await oauth.refresh(app, tokens["refresh_token"])
    await oauth_error(refreshed, 400, "invalid_grant")


async def test_fifty_concurrent_redemptions_of_one_code_issue_at_most_one_token_set(
    oauth: OAuthTester, app: Quart
) -> None:
    registered = await oauth.register()
    authorization = oauth.request(registered)
    await oauth.code(authorization)
    responses = await asyncio.gather(
        *(oauth.exchange(registered, authorization) for _ in range(50))
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] <= 1, statuses
    assert statuses[200] + statuses[400] == 50, statuses
    issued = await access_tokens(app)
    assert len(issued) == statuses[200]
    assert all(t.revoked_at is not None for t in issued), "a replayed code's tokens are revoked"


async def test_wrong_pkce_verifier_is_invalid_grant_and_does_not_spend_the_code(
    oauth: OAuthTester,
) -> None:
    app = await oauth.register()
    authorization = oauth.request(app)
    await oauth.code(authorization)
    for wrong in ("x" * 43, authorization.verifier[:-1] + "A", "short", "é" * 50):
        response = await oauth.exchange(app, authorization, code_verifier=wrong)
        await oauth_error(response, 400, "invalid_grant")
    assert (await oauth.exchange(app, authorization)).status_code == 200


async def test_missing_pkce_verifier_is_invalid_request(oauth: OAuthTester) -> None:
    app = await oauth.register(token_endpoint_auth_method="client_secret_post")
    authorization = oauth.request(app)
    await oauth.code(authorization)
    response = await oauth.token(
        {"grant_type": "authorization_code", "code": authorization.params["code"],
         "redirect_uri": app["redirect_uris"][0], "client_id": app["client_id"],
         "client_secret": app["client_secret"]}
    )  # fmt: skip
    body = await oauth_error(response, 400, "invalid_request")
    assert "code_verifier" in body["error_description"]


async def test_another_clients_code_is_invalid_grant(oauth: OAuthTester) -> None:
    victim = await oauth.register(client_name="Victim app")
    attacker = await oauth.register(client_name="Attacker app")
    authorization = oauth.request(victim)
    await oauth.code(authorization)
    stolen = await oauth.exchange(attacker, authorization)
    await oauth_error(stolen, 400, "invalid_grant")
    assert (await oauth.exchange(victim, authorization)).status_code == 200, "not spent"


async def test_mix_up_of_clients_on_the_token_endpoint_is_refused(oauth: OAuthTester) -> None:
    """A confidential client's credentials with another client's id or code."""
    honest = await oauth.register(token_endpoint_auth_method="client_secret_basic")
    other = await oauth.register(token_endpoint_auth_method="client_secret_basic")
    authorization = oauth.request(honest)
    await oauth.code(authorization)
    form = {
        "grant_type": "authorization_code",
        "code": authorization.params["code"],
        "redirect_uri": honest["redirect_uris"][0],
        "code_verifier": authorization.verifier,
    }
    as_other = await oauth.token(form, basic(other["client_id"], other["client_secret"]))
    await oauth_error(as_other, 400, "invalid_grant")
    claims_honest = await oauth.token(
        {**form, "client_id": honest["client_id"]},
        basic(other["client_id"], other["client_secret"]),
    )
    await oauth_error(claims_honest, 400, "invalid_request")
    secret_of_other = await oauth.token(form, basic(honest["client_id"], other["client_secret"]))
    await oauth_error(secret_of_other, 401, "invalid_client")
    assert (await oauth.exchange(honest, authorization)).status_code == 200


async def test_wrong_redirect_uri_at_the_token_endpoint_is_invalid_grant(
    oauth: OAuthTester,
) -> None:
    app = await oauth.register(redirect_uris=["https://app.example.com/callback",
                                              "https://app.example.com/other"])  # fmt: skip
    authorization = oauth.request(app)
    await oauth.code(authorization)
    wrong = await oauth.exchange(app, authorization, redirect_uri="https://app.example.com/other")
    await oauth_error(wrong, 400, "invalid_grant")
    missing = await oauth.token(
        {"grant_type": "authorization_code", "code": authorization.params["code"],
         "code_verifier": authorization.verifier, "client_id": app["client_id"]}
    )  # fmt: skip
    await oauth_error(missing, 400, "invalid_request")
    assert (await oauth.exchange(app, authorization)).status_code == 200


async def test_expired_code_is_invalid_grant(oauth: OAuthTester, app: Quart) -> None:
    registered = await oauth.register()
    authorization = oauth.request(registered)
    await oauth.code(authorization)
    await run_sql(app, update(OAuthGrant).values(code_expires_at=utcnow() - timedelta(seconds=1)))
    body = await oauth_error(await oauth.exchange(registered, authorization), 400, "invalid_grant")
    assert "expired" in body["error_description"]


async def test_unknown_code_is_invalid_grant(oauth: OAuthTester) -> None:
    app = await oauth.register()
    authorization = oauth.request(app)
    await oauth.code(authorization)
    guess = await oauth.exchange(app, authorization, code="A" * 43)
    await oauth_error(guess, 400, "invalid_grant")


# -- refresh tokens -------------------------------------------------------------------


async def test_refresh_token_rotates_on_every_use(oauth: OAuthTester) -> None:
    app = await oauth.register()
    first = await oauth.tokens(app)
    second = await (await oauth.refresh(app, first["refresh_token"])).get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    third = await oauth.refresh(app, second["refresh_token"])
    assert third.status_code == 200
    assert (await oauth.me((await third.get_json())["access_token"])).status_code == 200


async def test_refresh_token_replay_revokes_the_whole_grant(oauth: OAuthTester) -> None:
    app = await oauth.register()
    stolen = await oauth.tokens(app)
    legit = await (await oauth.refresh(app, stolen["refresh_token"])).get_json()
    replay = await oauth.refresh(app, stolen["refresh_token"])
    await oauth_error(replay, 400, "invalid_grant")
    for access in (stolen["access_token"], legit["access_token"]):
        assert (await oauth.me(access)).status_code == 401
    await oauth_error(await oauth.refresh(app, legit["refresh_token"]), 400, "invalid_grant")


async def test_concurrent_refreshes_with_one_token_issue_at_most_one_new_set(
    oauth: OAuthTester, app: Quart
) -> None:
    registered = await oauth.register()
    tokens = await oauth.tokens(registered)
    responses = await asyncio.gather(
        *(oauth.refresh(registered, tokens["refresh_token"]) for _ in range(20))
    )
    assert Counter(r.status_code for r in responses)[200] <= 1
    live = [t for t in await access_tokens(app) if t.revoked_at is None]
    assert live == [], "a refresh token used twice revokes the grant"


@pytest.mark.parametrize("scope", ["users:read users:write", "users:write", "tokens:write"])
async def test_scope_escalation_on_refresh_is_invalid_scope(oauth: OAuthTester, scope: str) -> None:
    app = await oauth.register()
    tokens = await oauth.tokens(app, scope="users:read")
    response = await oauth.refresh(app, tokens["refresh_token"], scope=scope)
    await oauth_error(response, 400, "invalid_scope")
    assert (await oauth.refresh(app, tokens["refresh_token"])).status_code == 200, "not spent"


async def test_refresh_may_narrow_the_scope(oauth: OAuthTester) -> None:
    app = await oauth.register()
    tokens = await oauth.tokens(app, scope="users:read users:write")
    narrowed = await oauth.refresh(app, tokens["refresh_token"], scope="users:read")
    body = await narrowed.get_json()
    assert body["scope"] == "users:read"
    write = await oauth.api.patch(
        "/api/v1/users/current", json={"full_name": "X"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )  # fmt: skip
    assert write.status_code == 403
    wide_again = await oauth.refresh(app, body["refresh_token"])
    assert (await wide_again.get_json())["scope"] == "users:read users:write"


async def test_narrowing_an_apps_scope_narrows_its_grants_at_refresh(
    oauth: OAuthTester,
) -> None:
    app = await oauth.register()
    tokens = await oauth.tokens(app, scope="users:read users:write")
    patched = await oauth.api.patch(
        f"/api/v1/oauth/clients/{app['client_id']}", json={"scope": "users:read"},
        headers=oauth.developer_auth,
    )  # fmt: skip
    assert patched.status_code == 200
    refreshed = await (await oauth.refresh(app, tokens["refresh_token"])).get_json()
    assert refreshed["scope"] == "users:read"


async def test_another_clients_refresh_token_is_invalid_grant(oauth: OAuthTester) -> None:
    victim = await oauth.register()
    attacker = await oauth.register()
    tokens = await oauth.tokens(victim)
    await oauth_error(await oauth.refresh(attacker, tokens["refresh_token"]), 400, "invalid_grant")
    assert (await oauth.refresh(victim, tokens["refresh_token"])).status_code == 200


async def test_expired_refresh_token_is_invalid_grant(oauth: OAuthTester, app: Quart) -> None:
    registered = await oauth.register()
    tokens = await oauth.tokens(registered)
    await run_sql(app, update(OAuthRefreshToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    await oauth_error(
        await oauth.refresh(registered, tokens["refresh_token"]), 400, "invalid_grant"
    )


async def test_expired_access_token_is_refused(oauth: OAuthTester, app: Quart) -> None:
    tokens = await oauth.tokens(await oauth.register())
    await run_sql(app, update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = await oauth.me(tokens["access_token"])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_refresh_prunes_the_grants_expired_access_tokens(
    oauth: OAuthTester, app: Quart
) -> None:
    registered = await oauth.register()
    tokens = await oauth.tokens(registered)
    await run_sql(app, update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    await oauth.refresh(registered, tokens["refresh_token"])
    assert len(await access_tokens(app)) == 1


# -- grants, client authentication, parameters ------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "username": "alice", "password": PASSWORD},
        {"grant_type": "client_credentials"},
        {"grant_type": "implicit"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "x"},
    ],
)
async def test_password_and_other_grants_are_unsupported(
    oauth: OAuthTester, form: dict[str, str]
) -> None:
    app = await oauth.register(token_endpoint_auth_method="client_secret_post")
    response = await oauth.token(
        {**form, "client_id": app["client_id"], "client_secret": app["client_secret"]}
    )
    await oauth_error(response, 400, "unsupported_grant_type")


async def test_wrong_client_secret_is_401_with_a_basic_challenge(oauth: OAuthTester) -> None:
    app = await oauth.register(token_endpoint_auth_method="client_secret_basic")
    authorization = oauth.request(app)
    await oauth.code(authorization)
    response = await oauth.exchange({**app, "client_secret": "wrong"}, authorization)
    await oauth_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert (await oauth.exchange(app, authorization)).status_code == 200, "not spent"


@pytest.mark.parametrize(
    ("method", "sent", "status", "error"),
    [
        ("none", "client_secret_post", 401, "invalid_client"),
        ("client_secret_basic", "none", 401, "invalid_client"),
        ("client_secret_basic", "client_secret_post", 401, "invalid_client"),
        ("client_secret_post", "client_secret_basic", 401, "invalid_client"),
    ],
)
async def test_client_must_authenticate_the_way_it_registered(
    oauth: OAuthTester, method: str, sent: str, status: int, error: str
) -> None:
    app = await oauth.register(token_endpoint_auth_method=method)
    authorization = oauth.request(app)
    await oauth.code(authorization)
    pretend = {
        **app,
        "token_endpoint_auth_method": sent,
        "client_secret": app.get("client_secret", "s"),
    }
    await oauth_error(await oauth.exchange(pretend, authorization), status, error)


async def test_basic_credentials_are_form_decoded(oauth: OAuthTester) -> None:
    """RFC 6749 2.3.1: id and secret are form-urlencoded inside the Basic header."""
    app = await oauth.register(token_endpoint_auth_method="client_secret_basic")
    authorization = oauth.request(app)
    await oauth.code(authorization)
    escaped = app["client_secret"].replace("-", "%2D")
    response = await oauth.exchange({**app, "client_secret": escaped}, authorization)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer abc"}, {"Authorization": "Basic !!!"},
     {"Authorization": "Basic " + "Zm9v"}],
)  # fmt: skip
async def test_malformed_client_credentials_are_invalid_client(
    oauth: OAuthTester, headers: dict[str, str]
) -> None:
    response = await oauth.token({"grant_type": "refresh_token", "refresh_token": "x"}, headers)
    await oauth_error(response, 401, "invalid_client")


async def test_guessing_client_secrets_and_codes_locks_the_ip_out(
    make_oauth_app: AppMaker,
) -> None:
    app = await make_oauth_app(protect_limit=RateSpec(3, 3600))
    developer = await user_maker(app)("developer")
    await user_maker(app)("alice")
    from tests.api.helpers import logged_in

    oauth = OAuthTester(app, await bearer_maker(app)(developer), await logged_in(app, "alice"))
    registered = await oauth.register(token_endpoint_auth_method="client_secret_post")
    authorization = oauth.request(registered)
    await oauth.code(authorization)
    wrong_secret = await oauth.exchange({**registered, "client_secret": "guess"}, authorization)
    wrong_code = await oauth.exchange(registered, authorization, code="B" * 43)
    wrong_refresh = await oauth.refresh(registered, "C" * 43)
    assert [r.status_code for r in (wrong_secret, wrong_code, wrong_refresh)] == [401, 400, 400]
    locked = await oauth.exchange(registered, authorization)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0


async def test_token_requests_must_be_form_encoded_with_single_parameters(
    oauth: OAuthTester,
) -> None:
    app = await oauth.register()
    as_json = await oauth.api.post(
        "/oauth/token", json={"grant_type": "refresh_token", "client_id": app["client_id"]}
    )
    await oauth_error(as_json, 400, "invalid_request")
    repeated = await oauth.api.post(
        "/oauth/token",
        data=f"grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id={app['client_id']}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = await oauth_error(repeated, 400, "invalid_request")
    assert "refresh_token" in body["error_description"]
    missing = await oauth.token({"client_id": app["client_id"]})
    await oauth_error(missing, 400, "invalid_request")


async def test_token_response_carries_no_store_and_only_granted_scopes(
    oauth: OAuthTester, app: Quart, alice: User
) -> None:
    registered = await oauth.register(scope="users:read")
    response = await oauth.exchange(registered, await _code(oauth, registered))
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    (token,) = await access_tokens(app)
    assert token.scopes == ["users:read"]
    assert token.user_id == alice.id
    assert token.expires_at is not None
    assert abs(token.expires_at - token.created_at - timedelta(hours=1)) < timedelta(minutes=1)


async def _code(oauth: OAuthTester, app: dict[str, Any]) -> Any:
    authorization = oauth.request(app)
    await oauth.code(authorization)
    return authorization


async def test_deleted_user_has_no_grants_left(oauth: OAuthTester, app: Quart, alice: User) -> None:
    tokens = await oauth.tokens(await oauth.register())
    deleted = await oauth.browser.delete("/api/v1/users/current")
    assert deleted.status_code == 204
    assert (await oauth.me(tokens["access_token"])).status_code == 401
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        count = select(func.count()).select_from(OAuthGrant).where(OAuthGrant.user_id == alice.id)
        assert (await session.execute(count)).scalar_one() == 0
    assert isinstance(alice, User)
