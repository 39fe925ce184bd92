"""``POST /oauth/revoke`` (RFC 7009): an app hands back its tokens."""

from __future__ import annotations

from tests.oauth.helpers import OAuthTester, basic


async def test_revoking_an_access_token_ends_it_and_keeps_the_grant(oauth: OAuthTester) -> None:
    app = await oauth.register()
    tokens = await oauth.tokens(app)
    response = await oauth.api.post(
        "/oauth/revoke", form={"token": tokens["access_token"], "client_id": app["client_id"]}
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert (await oauth.me(tokens["access_token"])).status_code == 401
    assert (await oauth.refresh(app, tokens["refresh_token"])).status_code == 200


async def test_revoking_a_refresh_token_revokes_its_whole_grant(oauth: OAuthTester) -> None:
    app = await oauth.register(token_endpoint_auth_method="client_secret_basic")
    tokens = await oauth.tokens(app)
    response = await oauth.api.post(
        "/oauth/revoke",
        form={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=basic(app["client_id"], app["client_secret"]),
    )
    assert response.status_code == 200
    assert (await oauth.me(tokens["access_token"])).status_code == 401
    assert (await oauth.refresh(app, tokens["refresh_token"])).status_code == 400


async def test_another_clients_token_is_left_alone_and_unknown_ones_are_200(
    oauth: OAuthTester,
) -> None:
    victim = await oauth.register()
    attacker = await oauth.register()
    tokens = await oauth.tokens(victim)
    for token in (tokens["access_token"], tokens["refresh_token"], "unknown-token"):
        response = await oauth.api.post(
            "/oauth/revoke", form={"token": token, "client_id": attacker["client_id"]}
        )
        assert response.status_code == 200
    assert (await oauth.me(tokens["access_token"])).status_code == 200
    assert (await oauth.refresh(victim, tokens["refresh_token"])).status_code == 200


async def test_personal_api_tokens_cannot_be_revoked_by_an_app(
    oauth: OAuthTester, bearer: object, alice: object
) -> None:
    app = await oauth.register()
    personal = await bearer(alice)  # type: ignore[operator]
    secret = personal["Authorization"].split(" ", 1)[1]
    response = await oauth.api.post(
        "/oauth/revoke", form={"token": secret, "client_id": app["client_id"]}
    )
    assert response.status_code == 200
    assert (await oauth.me(secret)).status_code == 200


async def test_revocation_needs_the_clients_own_authentication(oauth: OAuthTester) -> None:
    app = await oauth.register(token_endpoint_auth_method="client_secret_post")
    tokens = await oauth.tokens(app)
    wrong = await oauth.api.post(
        "/oauth/revoke",
        form={"token": tokens["access_token"], "client_id": app["client_id"],
              "client_secret": "wrong"},
    )  # fmt: skip
    assert wrong.status_code == 401
    assert (await wrong.get_json())["error"] == "invalid_client"
    missing = await oauth.api.post(
        "/oauth/revoke",
        form={"client_id": app["client_id"], "client_secret": app["client_secret"]},
    )
    assert missing.status_code == 400
    assert (await missing.get_json())["error"] == "invalid_request"
    assert (await oauth.me(tokens["access_token"])).status_code == 200
