"""``/api/v1/oauth/grants``: the apps a user authorized, and revoking one."""

from __future__ import annotations

from quart import Quart
from sqlalchemy import select

from quart_api.models import ApiToken, OAuthClient, OAuthGrant, OAuthRefreshToken, User
from tests.api.conftest import Bearer, bearer_maker, user_maker
from tests.api.helpers import assert_problem, logged_in, unchanged_database
from tests.oauth.conftest import AppMaker
from tests.oauth.helpers import OAuthTester

GRANTS = "/api/v1/oauth/grants"
CLIENTS = "/api/v1/oauth/clients"


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


async def test_no_stored_hash_of_a_secret_is_ever_shown(oauth: OAuthTester, app: Quart) -> None:
    registered = await oauth.register(token_endpoint_auth_method="client_secret_post")
    tokens = await oauth.tokens(registered)
    database = app.extensions["database"]
    async with database.sessionmaker() as session:
        hashes = {
            *(await session.execute(select(OAuthClient.secret_hash))).scalars(),
            *(await session.execute(select(OAuthGrant.code_hash))).scalars(),
            *(await session.execute(select(OAuthRefreshToken.token_hash))).scalars(),
            *(await session.execute(select(ApiToken.token_hash))).scalars(),
        }
    bodies = [
        await (await oauth.browser.get(GRANTS)).get_data(as_text=True),
        await (await oauth.api.get(CLIENTS, headers=oauth.developer_auth)).get_data(as_text=True),
        await (
            await oauth.api.get(
                f"{CLIENTS}/{registered['client_id']}", headers=oauth.developer_auth
            )
        ).get_data(as_text=True),
        await (await oauth.browser.get("/api/v1/auth/tokens")).get_data(as_text=True),
        await (await oauth.me(tokens["access_token"])).get_data(as_text=True),
    ]
    assert len(hashes) >= 4
    assert not [h for h in hashes for body in bodies if h and h in body]
