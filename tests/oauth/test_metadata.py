"""``/.well-known/oauth-authorization-server`` (RFC 8414) and where URLs come from."""

from __future__ import annotations

from quart import Quart

from tests.api.conftest import bearer_maker, user_maker
from tests.api.helpers import logged_in
from tests.oauth.conftest import AppMaker
from tests.oauth.helpers import OAuthTester


async def test_metadata_names_the_endpoints_and_s256_only(client: object) -> None:
    response = await client.get("/.well-known/oauth-authorization-server")  # type: ignore[attr-defined]
    body = await response.get_json()
    assert response.status_code == 200
    assert body["issuer"] == "http://localhost"
    assert body["authorization_endpoint"] == "http://localhost/oauth/authorize"
    assert body["token_endpoint"] == "http://localhost/oauth/token"
    assert body["revocation_endpoint"] == "http://localhost/oauth/revoke"
    assert body["registration_endpoint"] == "http://localhost/api/v1/oauth/clients"
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert body["response_types_supported"] == ["code"]
    assert body["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert "password" not in body["grant_types_supported"]
    assert body["authorization_response_iss_parameter_supported"] is True
    assert body["scopes_supported"] == ["users:read", "users:write"]
    assert set(body["token_endpoint_auth_methods_supported"]) == {
        "none", "client_secret_basic", "client_secret_post"
    }  # fmt: skip


async def test_forged_host_header_does_not_change_urls_when_public_url_is_set(
    make_oauth_app: AppMaker,
) -> None:
    app = await make_oauth_app(public_url="https://api.example.com/")
    response = await app.test_client().get(
        "/.well-known/oauth-authorization-server", headers={"Host": "evil.example"}
    )
    body = await response.get_json()
    assert body["issuer"] == "https://api.example.com"
    assert body["token_endpoint"] == "https://api.example.com/oauth/token"
    assert "evil" not in str(body)


async def test_forged_host_header_does_not_change_the_iss_of_the_authorization_response(
    make_oauth_app: AppMaker,
) -> None:
    app = await make_oauth_app(public_url="https://api.example.com")
    oauth = await _tester(app)
    authorization = oauth.request(await oauth.register())
    page = await oauth.browser.get(authorization.path, headers={"Host": "evil.example"})
    assert page.status_code == 200
    await oauth.code(authorization)
    assert authorization.params["iss"] == "https://api.example.com"


async def test_with_public_url_set_a_consent_post_from_the_hosts_origin_is_refused(
    make_oauth_app: AppMaker,
) -> None:
    """The origin a form must come from is PUBLIC_URL's, not one the Host header names."""
    app = await make_oauth_app(public_url="https://api.example.com")
    oauth = await _tester(app)
    authorization = oauth.request(await oauth.register())
    forged = await oauth.decide(authorization, Origin="http://evil.example", Host="evil.example")
    assert forged.status_code == 403
    ok = await oauth.decide(authorization, Origin="https://api.example.com")
    assert ok.status_code == 303


async def _tester(app: Quart) -> OAuthTester:
    developer = await user_maker(app)("developer")
    await user_maker(app)("alice")
    return OAuthTester(app, await bearer_maker(app)(developer), await logged_in(app, "alice"))
