"""Whole authorization code flows, public (PKCE only) and confidential (PKCE + secret)."""

from __future__ import annotations

from quart_api.models import User
from tests.oauth.helpers import OAuthTester


async def test_public_client_flow_gives_a_bearer_token_with_the_granted_scopes(
    oauth: OAuthTester, alice: User
) -> None:
    app = await oauth.register()
    assert "client_secret" not in app
    authorization = oauth.request(app, scope="users:read")
    code = await oauth.code(authorization)
    assert authorization.params["state"] in authorization.query
    response = await oauth.exchange(app, authorization, code)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "users:read"
    me = await oauth.me(body["access_token"])
    assert me.status_code == 200
    assert (await me.get_json())["data"]["id"] == str(alice.id)
    write = await oauth.api.patch(
        "/api/v1/users/current",
        json={"full_name": "Not Granted"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert write.status_code == 403
    assert 'error="insufficient_scope"' in write.headers["WWW-Authenticate"]


async def test_confidential_client_flow_with_basic_and_post_authentication(
    oauth: OAuthTester,
) -> None:
    for method in ("client_secret_basic", "client_secret_post"):
        app = await oauth.register(token_endpoint_auth_method=method)
        assert app["client_secret"]
        assert app["client_secret_expires_at"] == 0
        body = await oauth.tokens(app, scope="users:read users:write")
        assert body["scope"] == "users:read users:write"
        assert (await oauth.me(body["access_token"])).status_code == 200
        refreshed = await oauth.refresh(app, body["refresh_token"])
        assert refreshed.status_code == 200, await refreshed.get_data(as_text=True)
        assert (await oauth.me((await refreshed.get_json())["access_token"])).status_code == 200
