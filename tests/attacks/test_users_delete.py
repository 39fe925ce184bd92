"""Attacks on deleting an account: what it ended must stop working at once.

Deleting an account deletes the apps it registered, and the database deletes the
tokens other users gave those apps. This worker's principal cache must forget those
users too (as deleting one app does), or an app whose developer is gone keeps
acting for its users for ``AUTH_CACHE_SECONDS``.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import bearer_maker, user_maker
from tests.api.helpers import logged_in
from tests.oauth.conftest import AppMaker
from tests.oauth.helpers import OAuthTester


@pytest.mark.parametrize("deleted_by", ["owner", "admin"])
async def test_deleting_an_apps_owner_ends_its_users_tokens_at_once_despite_the_cache(
    make_oauth_app: AppMaker, deleted_by: str
) -> None:
    app = await make_oauth_app(auth_cache_seconds=300.0)
    developer = await user_maker(app)("developer")
    admin = await user_maker(app)("root", admin=True)
    await user_maker(app)("alice")
    oauth = OAuthTester(app, await bearer_maker(app)(developer), await logged_in(app, "alice"))
    tokens = await oauth.tokens(await oauth.register())
    assert (await oauth.me(tokens["access_token"])).status_code == 200  # now cached
    if deleted_by == "owner":
        deleted = await oauth.api.delete("/api/v1/users/current", headers=oauth.developer_auth)
    else:
        deleted = await oauth.api.delete(
            f"/api/v1/users/{developer.id}", headers=await bearer_maker(app)(admin)
        )
    assert deleted.status_code == 204
    refused = await oauth.me(tokens["access_token"])
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert (await oauth.browser.get("/api/v1/users/current")).status_code == 200  # alice stays
