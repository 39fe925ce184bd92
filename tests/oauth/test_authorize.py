"""``/oauth/authorize``: the log-in form, the consent page, and every refusal.

Attacks closed here (RFC 9700): open redirects through unregistered redirect URIs,
CSRF on the consent and log-in forms, clickjacking of the Allow button, the implicit
grant, PKCE downgrades, scope escalation, repeated parameters.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from quart import Quart
from sqlalchemy import func, select

from quart_api.db import Database
from quart_api.models import OAuthGrant, User
from quart_api.settings import RateSpec
from tests.api.conftest import PASSWORD
from tests.api.helpers import logged_in
from tests.oauth.conftest import AppMaker
from tests.oauth.helpers import (
    REDIRECT_URI,
    OAuthTester,
    callback_params,
    csrf_token,
    pkce_pair,
)


async def grant_count(app: Quart) -> int:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        return (await session.execute(select(func.count()).select_from(OAuthGrant))).scalar_one()


def assert_page_is_locked_down(headers: dict[str, str] | object) -> None:
    csp = headers["Content-Security-Policy"]  # type: ignore[index]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY"  # type: ignore[index]
    assert headers["Cache-Control"] == "no-store"  # type: ignore[index]
    assert headers["Referrer-Policy"] == "same-origin"  # type: ignore[index]


# -- log-in form and consent page ---------------------------------------------------


async def test_without_a_session_the_log_in_form_is_shown(oauth: OAuthTester) -> None:
    app = await oauth.register(client_name="Photo Printer")
    authorization = oauth.request(app)
    response = await oauth.api.get(authorization.path)  # a browser with no session
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert "Sign in to authorize Photo Printer" in html
    assert f'action="/oauth/authorize/login?{authorization.query.replace("&", "&amp;")}"' in html
    assert "oauth_form=" in response.headers["Set-Cookie"]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    assert_page_is_locked_down(response.headers)


async def test_log_in_through_the_form_then_allow_gives_the_app_a_code(
    app: Quart, oauth: OAuthTester
) -> None:
    registered = await oauth.register()
    authorization = oauth.request(registered)
    browser = app.test_client()
    form_page = await browser.get(authorization.path)
    logged = await browser.post(
        f"/oauth/authorize/login?{authorization.query}",
        form={"csrf_token": await csrf_token(form_page), "username": "Alice",
              "password": PASSWORD},
    )  # fmt: skip
    assert logged.status_code == 200, await logged.get_data(as_text=True)
    assert "QUART_AUTH=" in logged.headers["Set-Cookie"]
    assert_page_is_locked_down(logged.headers)
    consent = logged
    assert "Authorize Photo Printer?" in await consent.get_data(as_text=True)
    allowed = await browser.post(
        authorization.path, form={"csrf_token": await csrf_token(consent), "decision": "allow"}
    )
    assert allowed.status_code == 303
    params = callback_params(allowed)
    authorization.params = params
    assert (await oauth.exchange(registered, authorization)).status_code == 200


async def test_wrong_password_on_the_form_is_401_and_shows_the_form_again(
    oauth: OAuthTester, app: Quart
) -> None:
    registered = await oauth.register()
    authorization = oauth.request(registered)
    browser = app.test_client()
    form_page = await browser.get(authorization.path)
    response = await browser.post(
        f"/oauth/authorize/login?{authorization.query}",
        form={"csrf_token": await csrf_token(form_page), "username": "alice",
              "password": "wrong password"},
    )  # fmt: skip
    html = await response.get_data(as_text=True)
    assert response.status_code == 401
    assert "Wrong username or password." in html
    assert "wrong password" not in html
    assert "QUART_AUTH" not in response.headers.get("Set-Cookie", "")


@pytest.mark.parametrize("first", ["consent form", "api login"])
async def test_failed_logins_on_the_form_and_the_api_share_one_lock_out(
    make_oauth_app: AppMaker, first: str
) -> None:
    app = await make_oauth_app(protect_limit=RateSpec(3, 3600))
    from tests.api.conftest import bearer_maker, user_maker

    developer = await user_maker(app)("developer")
    await user_maker(app)("alice")
    oauth = OAuthTester(app, await bearer_maker(app)(developer), app.test_client())
    authorization = oauth.request(await oauth.register())
    browser = app.test_client()
    token = await csrf_token(await browser.get(authorization.path))

    async def form_login(password: str) -> int:
        response = await browser.post(
            f"/oauth/authorize/login?{authorization.query}",
            form={"csrf_token": token, "username": "alice", "password": password},
        )
        return response.status_code

    async def api_login(password: str) -> int:
        response = await app.test_client().post(
            "/api/v1/auth/login", json={"username": "alice", "password": password}
        )
        return response.status_code

    guess, then = (form_login, api_login) if first == "consent form" else (api_login, form_login)
    assert [await guess("wrong password") for _ in range(3)] == [401, 401, 401]
    assert await then(PASSWORD) == 429, "the other form's failures lock this one out too"


async def test_a_successful_log_in_on_the_form_clears_the_clients_failures(
    make_oauth_app: AppMaker,
) -> None:
    app = await make_oauth_app(protect_limit=RateSpec(3, 3600))
    from tests.api.conftest import bearer_maker, user_maker

    developer = await user_maker(app)("developer")
    await user_maker(app)("alice")
    oauth = OAuthTester(app, await bearer_maker(app)(developer), app.test_client())
    authorization = oauth.request(await oauth.register())
    statuses = []
    for password in ("wrong 1", "wrong 2", PASSWORD, "wrong 3", "wrong 4"):
        browser = app.test_client()
        token = await csrf_token(await browser.get(authorization.path))
        response = await browser.post(
            f"/oauth/authorize/login?{authorization.query}",
            form={"csrf_token": token, "username": "alice", "password": password},
        )
        statuses.append(response.status_code)
    assert statuses == [401, 401, 200, 401, 401]


async def test_consent_page_names_the_app_its_owner_and_each_scope_in_words(
    oauth: OAuthTester,
) -> None:
    registered = await oauth.register(client_name="Photo <Printer>")
    page = await oauth.consent_page(oauth.request(registered, scope="users:read users:write"))
    html = await page.get_data(as_text=True)
    assert "Authorize Photo &lt;Printer&gt;?" in html, "the app's name is escaped"
    assert "registered by developer" in html
    assert "<strong>alice</strong>" in html
    assert "See your profile, including your e-mail address" in html
    assert "Change your profile, create share links, and delete your account" in html
    assert 'value="allow"' in html
    assert 'value="deny"' in html
    assert REDIRECT_URI in html


# -- clickjacking -------------------------------------------------------------------


async def test_clickjacking_every_authorization_page_and_redirect_refuses_framing(
    oauth: OAuthTester,
) -> None:
    registered = await oauth.register()
    authorization = oauth.request(registered)
    consent = await oauth.consent_page(authorization)
    assert_page_is_locked_down(consent.headers)
    assert (
        "form-action 'self' https://app.example.com" in consent.headers["Content-Security-Policy"]
    )
    assert_page_is_locked_down((await oauth.api.get(authorization.path)).headers)  # log-in
    assert_page_is_locked_down((await oauth.browser.get("/oauth/authorize")).headers)  # error
    allowed = await oauth.decide(oauth.request(registered))
    assert allowed.status_code == 303
    assert_page_is_locked_down(allowed.headers)


# -- CSRF ---------------------------------------------------------------------------


async def test_csrf_consent_post_without_a_form_token_is_refused(
    oauth: OAuthTester, app: Quart
) -> None:
    authorization = oauth.request(await oauth.register())
    response = await oauth.browser.post(authorization.path, form={"decision": "allow"})
    assert response.status_code == 403
    assert "Location" not in response.headers
    assert await grant_count(app) == 0


async def test_csrf_consent_post_with_the_attackers_own_form_token_is_refused(
    oauth: OAuthTester, app: Quart, make_user: object
) -> None:
    """The attacker opens the consent page in their own session and makes the victim's
    browser post its token: the token is bound to the attacker's session."""
    authorization = oauth.request(await oauth.register())
    await make_user("mallory")  # type: ignore[operator]
    attacker = await logged_in(app, "mallory")
    attackers_token = await csrf_token(await attacker.get(authorization.path))
    response = await oauth.browser.post(
        authorization.path, form={"csrf_token": attackers_token, "decision": "allow"}
    )
    assert response.status_code == 403
    assert await grant_count(app) == 0


async def test_csrf_form_token_of_one_authorization_request_does_not_approve_another(
    oauth: OAuthTester, app: Quart
) -> None:
    registered = await oauth.register()
    seen = oauth.request(registered, scope="users:read")
    token = await csrf_token(await oauth.consent_page(seen))
    forged = oauth.request(registered, scope="users:read users:write")
    response = await oauth.browser.post(
        forged.path, form={"csrf_token": token, "decision": "allow"}
    )
    assert response.status_code == 403
    assert await grant_count(app) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost.evil.example"},
    ],
)
async def test_csrf_cross_site_consent_post_is_refused_even_with_a_valid_token(
    oauth: OAuthTester, app: Quart, headers: dict[str, str]
) -> None:
    authorization = oauth.request(await oauth.register())
    response = await oauth.decide(authorization, **headers)
    assert response.status_code == 403
    assert "Location" not in response.headers
    assert await grant_count(app) == 0


async def test_same_origin_consent_post_with_browser_headers_is_accepted(
    oauth: OAuthTester,
) -> None:
    authorization = oauth.request(await oauth.register())
    response = await oauth.decide(
        authorization, **{"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}
    )
    assert response.status_code == 303


async def test_csrf_log_in_form_post_without_its_cookie_is_refused(
    oauth: OAuthTester, app: Quart
) -> None:
    """Login CSRF: a page elsewhere posts the attacker's credentials to log the victim in."""
    authorization = oauth.request(await oauth.register())
    token = await csrf_token(await app.test_client().get(authorization.path))
    victim = app.test_client()  # never loaded the form: no form cookie
    response = await victim.post(
        f"/oauth/authorize/login?{authorization.query}",
        form={"csrf_token": token, "username": "alice", "password": PASSWORD},
    )
    assert response.status_code == 403
    assert "QUART_AUTH" not in response.headers.get("Set-Cookie", "")


async def test_csrf_cross_site_log_in_post_is_refused(oauth: OAuthTester, app: Quart) -> None:
    authorization = oauth.request(await oauth.register())
    browser = app.test_client()
    token = await csrf_token(await browser.get(authorization.path))
    response = await browser.post(
        f"/oauth/authorize/login?{authorization.query}",
        form={"csrf_token": token, "username": "alice", "password": PASSWORD},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403


# -- the answer to the app -----------------------------------------------------------


async def test_deny_sends_access_denied_back_with_state(oauth: OAuthTester, app: Quart) -> None:
    authorization = oauth.request(await oauth.register())
    response = await oauth.decide(authorization, "deny")
    params = callback_params(response)
    assert response.status_code == 303
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")
    assert params["error"] == "access_denied"
    assert f"state={params['state']}" in authorization.query
    assert await grant_count(app) == 0


async def test_authorization_response_carries_code_state_and_issuer(
    oauth: OAuthTester,
) -> None:
    registered = await oauth.register(redirect_uris=["https://app.example.com/cb?tenant=7"])
    authorization = oauth.request(registered, state="xyz 1/2")
    await oauth.code(authorization)
    assert authorization.params["state"] == "xyz 1/2"
    assert authorization.params["iss"] == "http://localhost"
    assert authorization.params["tenant"] == "7", "the registered query is kept"


async def test_bearer_token_cannot_approve_an_app(
    oauth: OAuthTester, bearer: object, alice: User
) -> None:
    authorization = oauth.request(await oauth.register())
    headers = await bearer(alice)  # type: ignore[operator]
    response = await oauth.api.get(authorization.path, headers=headers)
    assert response.status_code == 403
    assert "text/html" in response.content_type


# -- never redirect to an unverified URI ------------------------------------------------


async def test_unknown_client_gets_an_error_page_never_a_redirect(oauth: OAuthTester) -> None:
    _, challenge = pkce_pair()
    for client_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", ""):
        query = urlencode(
            {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
             "code_challenge": challenge, "code_challenge_method": "S256"}
        )  # fmt: skip
        response = await oauth.browser.get(f"/oauth/authorize?{query}")
        assert response.status_code == 400
        assert "Location" not in response.headers
        assert "text/html" in response.content_type


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        "https://app.example.com/callback/evil",
        "https://app.example.com/callbac",
        "https://app.example.com/callback?next=https://evil.example",
        "https://app.example.com/callback#x",
        "http://app.example.com/callback",
        "https://APP.example.com/callback",
        "https://app.example.com:443/callback",
        "https://app.example.com.evil.example/callback",
        "https://user@app.example.com/callback",
        "https://app.example.com/%63allback",
    ],
)
async def test_open_redirect_via_unregistered_redirect_uri_is_refused_without_redirect(
    oauth: OAuthTester, app: Quart, redirect_uri: str
) -> None:
    authorization = oauth.request(await oauth.register(), redirect_uri=redirect_uri)
    response = await oauth.browser.get(authorization.path)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "not one this app registered" in await response.get_data(as_text=True)
    posted = await oauth.browser.post(authorization.path, form={"decision": "allow"})
    assert posted.status_code in (400, 403)
    assert "Location" not in posted.headers
    assert await grant_count(app) == 0


async def test_loopback_redirect_uri_matches_on_any_port_and_nothing_else(
    oauth: OAuthTester,
) -> None:
    registered = await oauth.register(redirect_uris=["http://127.0.0.1/callback"])
    any_port = "http://127.0.0.1:53123/callback"
    ok = oauth.request(registered, redirect_uri=any_port)
    await oauth.code(ok)
    assert (await oauth.exchange(registered, ok, redirect_uri=any_port)).status_code == 200
    others = (
        "http://127.0.0.1:53123/other",
        "http://localhost:53123/callback",
        "http://127.0.0.2:53123/callback",
        "https://127.0.0.1:53123/callback",
    )
    for other in others:
        response = await oauth.browser.get(oauth.request(registered, redirect_uri=other).path)
        assert response.status_code == 400, other
        assert "Location" not in response.headers


async def test_redirect_uri_may_be_left_out_only_when_one_is_registered(
    oauth: OAuthTester,
) -> None:
    single = await oauth.register()
    authorization = oauth.request(single, redirect_uri=None)
    await oauth.code(authorization)
    form_without = await oauth.token(
        {"grant_type": "authorization_code", "code": authorization.params["code"],
         "code_verifier": authorization.verifier, "client_id": single["client_id"]}
    )  # fmt: skip
    assert form_without.status_code == 200
    two = await oauth.register(redirect_uris=[REDIRECT_URI, "https://app.example.com/other"])
    response = await oauth.browser.get(oauth.request(two, redirect_uri=None).path)
    assert response.status_code == 400
    assert "Location" not in response.headers


# -- refusals sent back to the app ------------------------------------------------------


async def refusal(oauth: OAuthTester, query: str) -> dict[str, str]:
    response = await oauth.browser.get(f"/oauth/authorize?{query}")
    assert response.status_code == 302, await response.get_data(as_text=True)
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")
    return callback_params(response)


@pytest.mark.parametrize("name", ["state", "scope", "response_type", "code_challenge", "prompt"])
async def test_repeated_parameter_is_invalid_request(
    oauth: OAuthTester, app: Quart, name: str
) -> None:
    authorization = oauth.request(await oauth.register())
    params = await refusal(oauth, f"{authorization.query}&{name}=again&{name}=and-again")
    assert params["error"] == "invalid_request"
    assert name in params["error_description"]
    assert await grant_count(app) == 0


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
async def test_repeated_client_id_or_redirect_uri_gets_an_error_page(
    oauth: OAuthTester, name: str
) -> None:
    registered = await oauth.register()
    authorization = oauth.request(registered)
    value = registered["client_id"] if name == "client_id" else REDIRECT_URI
    response = await oauth.browser.get(f"{authorization.path}&{urlencode({name: value})}")
    assert response.status_code == 400
    assert "Location" not in response.headers


@pytest.mark.parametrize("response_type", ["token", "code token", "id_token", "password"])
async def test_implicit_and_other_response_types_are_unsupported(
    oauth: OAuthTester, response_type: str
) -> None:
    authorization = oauth.request(await oauth.register(), response_type=response_type)
    params = await refusal(oauth, authorization.query)
    assert params["error"] == "unsupported_response_type"
    assert "access_token" not in params


async def test_pkce_plain_method_is_refused(oauth: OAuthTester) -> None:
    verifier = "v" * 50
    authorization = oauth.request(
        await oauth.register(), code_challenge=verifier, code_challenge_method="plain"
    )
    params = await refusal(oauth, authorization.query)
    assert params["error"] == "invalid_request"
    assert "S256" in params["error_description"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge": None},
        {"code_challenge_method": None},
        {"code_challenge": "too-short"},
        {"code_challenge_method": "s256"},
    ],
)
async def test_pkce_is_required_for_every_client(
    oauth: OAuthTester, overrides: dict[str, str | None]
) -> None:
    confidential = await oauth.register(token_endpoint_auth_method="client_secret_basic")
    params = await refusal(oauth, oauth.request(confidential, **overrides).query)
    assert params["error"] == "invalid_request"


@pytest.mark.parametrize(
    "scope", ["users:write", "tokens:write", "users:read admin", "users:read\tusers:write"]
)
async def test_scope_escalation_at_authorize_is_invalid_scope(
    oauth: OAuthTester, app: Quart, scope: str
) -> None:
    """More than the app registered, more than any app may hold, or no scope at all."""
    registered = await oauth.register(scope="users:read")
    params = await refusal(oauth, oauth.request(registered, scope=scope).query)
    assert params["error"] == "invalid_scope"
    assert await grant_count(app) == 0


async def test_too_long_state_is_invalid_request_and_not_echoed(oauth: OAuthTester) -> None:
    params = await refusal(oauth, oauth.request(await oauth.register(), state="s" * 1001).query)
    assert params["error"] == "invalid_request"
    assert "state" not in params
