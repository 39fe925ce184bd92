"""Attacks on what one account may hold, through OAuth: apps, and the user's own tokens.

- An app the user authorized refreshes its tokens as often as it likes; each refresh
  adds an access token row. Those must not count toward the user's own
  ``MAX_LIVE_TOKENS``, or an app (which never holds ``tokens:write``) could stop the
  user from making personal tokens.
- A user registers at most ``MAX_CLIENTS`` apps, as they hold at most 100 tokens and
  share links, and 50 concurrent registrations cannot overshoot it together.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from quart import Quart
from sqlalchemy import func, select

from quart_api.api.tokens import MAX_LIVE_TOKENS
from quart_api.db import Database
from quart_api.models import ApiToken, OAuthClient, User
from quart_api.oauth.clients_api import MAX_CLIENTS
from tests.api.helpers import assert_problem, unchanged_database
from tests.oauth.helpers import REDIRECT_URI, OAuthTester

CLIENTS = "/api/v1/oauth/clients"
TOKENS = "/api/v1/auth/tokens"


async def test_an_apps_refreshes_do_not_use_up_the_users_personal_token_limit(
    oauth: OAuthTester, app: Quart
) -> None:
    """MAX_LIVE_TOKENS refreshes leave as many live access tokens of the app; the user
    still creates a personal token, and the app's tokens still work."""
    registered = await oauth.register(scope="users:read")
    refresh_token = (await oauth.tokens(registered))["refresh_token"]
    access_token = ""
    for _ in range(MAX_LIVE_TOKENS):
        refreshed = await oauth.refresh(registered, refresh_token)
        assert refreshed.status_code == 200, await refreshed.get_data(as_text=True)
        body = await refreshed.get_json()
        refresh_token, access_token = body["refresh_token"], body["access_token"]
    assert await _live_access_tokens(app) > MAX_LIVE_TOKENS
    mine = await oauth.browser.post(TOKENS, json={"name": "laptop", "scopes": ["users:read"]})
    assert mine.status_code == 201, await mine.get_data(as_text=True)
    assert (await oauth.me(access_token)).status_code == 200


async def test_registering_apps_past_the_limit_is_409_and_writes_nothing(
    oauth: OAuthTester, app: Quart, developer: User
) -> None:
    await _hold_clients(app, developer, MAX_CLIENTS)
    body = {"client_name": "One too many", "redirect_uris": [REDIRECT_URI]}
    async with unchanged_database(app):
        refused = await oauth.api.post(CLIENTS, json=body, headers=oauth.developer_auth)
        await assert_problem(refused, 409, detail=f"{MAX_CLIENTS} live OAuth apps")
    listed = await (await oauth.api.get(CLIENTS, headers=oauth.developer_auth)).get_json()
    deleted = await oauth.api.delete(
        f"{CLIENTS}/{listed['data'][0]['client_id']}", headers=oauth.developer_auth
    )
    assert deleted.status_code == 204
    again = await oauth.api.post(CLIENTS, json=body, headers=oauth.developer_auth)
    assert again.status_code == 201


async def test_fifty_concurrent_registrations_cannot_overshoot_the_app_limit(
    oauth: OAuthTester, app: Quart, developer: User
) -> None:
    await _hold_clients(app, developer, MAX_CLIENTS - 3)
    responses = await asyncio.gather(
        *(
            oauth.api.post(
                CLIENTS,
                json={"client_name": f"race {n}", "redirect_uris": [REDIRECT_URI]},
                headers=oauth.developer_auth,
            )
            for n in range(50)
        )
    )
    assert Counter(r.status_code for r in responses) == {201: 3, 409: 47}
    assert await _count(app, select(func.count()).select_from(OAuthClient)) == MAX_CLIENTS


async def _hold_clients(app: Quart, user: User, count: int) -> None:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        for n in range(count):
            session.add(
                OAuthClient(
                    user_id=user.id,
                    client_name=f"held {n}",
                    redirect_uris=[REDIRECT_URI],
                    token_endpoint_auth_method="none",
                    scopes=["users:read"],
                )
            )
        await session.commit()


async def _live_access_tokens(app: Quart) -> int:
    live = select(func.count()).where(ApiToken.grant_id.is_not(None), ApiToken.revoked_at.is_(None))
    return await _count(app, live)


async def _count(app: Quart, query: object) -> int:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())  # type: ignore[call-overload]
