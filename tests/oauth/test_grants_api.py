"""``/api/v1/oauth/grants``: the apps a user authorized, and revoking one."""

from __future__ import annotations

from quart import Quart

from quart_api.models import User
from tests.api.conftest import Bearer, bearer_maker, user_maker
from tests.api.helpers import assert_problem, logged_in, unchanged_database
from tests.oauth.conftest import AppMaker
from tests.oauth.helpers import OAuthTester

GRANTS = "/api/v1/oauth/grants"


async def test_user_lists_the_apps_they_authorized(oauth: OAuthTester) -> None:
    registered = await oauth.register(client_name="Photo Printer")
    await oauth.tokens(registered, scope="users:read")
    pending = oauth.request(registered)
    await oauth.code(pending)  # consented, never redeemed: not (yet) an authorization
    listed = await (await oauth.browser.get(GRANTS)).get_json()
    assert listed["total"] == 1
    (grant,) = listed["data"]
    assert grant["client_name"] == "Photo Printer"
    assert grant["client_id"] == registered["client_id"]
    assert grant["scope"] == "users:read"
    personal = await (await oauth.browser.get("/api/v1/auth/tokens")).get_json()
    assert personal["data"] == [], "apps' access tokens are not personal tokens"


async def test_revoking_a_grant_ends_its_tokens_at_once_despite_the_principal_cache(
    make_oauth_app: AppMaker,
) -> None:
    app = await make_oauth_app(auth_cache_seconds=300.0)
    developer = await user_maker(app)("developer")
    await user_maker(app)("alice")
    oauth = OAuthTester(app, await bearer_maker(app)(developer), await logged_in(app, "alice"))
    registered = await oauth.register()
    tokens = await oauth.tokens(registered)
    assert (await oauth.me(tokens["access_token"])).status_code == 200  # now cached
    (grant,) = (await (await oauth.browser.get(GRANTS)).get_json())["data"]
    revoked = await oauth.browser.delete(f"{GRANTS}/{grant['id']}")
    assert revoked.status_code == 204
    assert (await oauth.me(tokens["access_token"])).status_code == 401
    assert (await oauth.refresh(registered, tokens["refresh_token"])).status_code == 400
    listed = await (await oauth.browser.get(GRANTS)).get_json()
    assert listed["data"] == []
    again = await oauth.browser.delete(f"{GRANTS}/{grant['id']}")
    await assert_problem(again, 404)


async def test_another_users_grant_is_403_and_unknown_is_404(
    oauth: OAuthTester, bearer: Bearer, developer: User, app: Quart
) -> None:
    tokens = await oauth.tokens(await oauth.register())
    (grant,) = (await (await oauth.browser.get(GRANTS)).get_json())["data"]
    developers_token = await bearer(developer)
    async with unchanged_database(app):
        other = await oauth.api.delete(f"{GRANTS}/{grant['id']}", headers=developers_token)
        await assert_problem(other, 403)
        for missing in ("00000000-0000-0000-0000-000000000000", "nope"):
            await assert_problem(await oauth.browser.delete(f"{GRANTS}/{missing}"), 404)
    assert (await oauth.me(tokens["access_token"])).status_code == 200
