"""Attacks on the OAuth JSON routes through the user's browser (CSRF).

``/api/v1/oauth/clients`` and ``/grants`` take the session cookie like every
``/api/v1`` route, and two of their unsafe requests need no body at all (a secret's
rotation, a grant's revocation): a plain HTML form on any site could send them. Each
is refused as cross-site with the cookie, before it changes anything.
"""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart

from tests.api.helpers import assert_problem, unchanged_database
from tests.oauth.helpers import REDIRECT_URI, OAuthTester

CLIENTS = "/api/v1/oauth/clients"
CROSS_SITE = ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"})

#: (method, path, JSON body or None); ``{client}`` and ``{grant}`` are alice's own.
UNSAFE_OAUTH_ROUTES = [
    ("POST", CLIENTS, {"client_name": "Evil", "redirect_uris": ["https://evil.example/cb"]}),
    ("PATCH", f"{CLIENTS}/{{client}}", {"redirect_uris": ["https://evil.example/cb"]}),
    ("POST", f"{CLIENTS}/{{client}}/secret", None),
    ("DELETE", f"{CLIENTS}/{{client}}", None),
    ("DELETE", "/api/v1/oauth/grants/{grant}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), UNSAFE_OAUTH_ROUTES)
async def test_a_cross_site_request_with_the_session_cookie_is_403_on_every_oauth_route(
    oauth: OAuthTester, app: Quart, method: str, path: str, body: Any
) -> None:
    browser = oauth.browser  # alice's cookie session
    created = await browser.post(
        CLIENTS,
        json={"client_name": "Mine", "redirect_uris": [REDIRECT_URI],
              "token_endpoint_auth_method": "client_secret_basic"},
    )  # fmt: skip
    client = (await created.get_json())["data"]
    await oauth.tokens(await oauth.register())  # alice authorizes the developer's app
    grant = (await (await browser.get("/api/v1/oauth/grants")).get_json())["data"][0]
    path = path.format(client=client["client_id"], grant=grant["id"])
    async with unchanged_database(app):
        for headers in CROSS_SITE:
            kwargs: dict[str, Any] = {"headers": headers}
            if body is not None:
                kwargs["json"] = body
            refused = await browser.open(path, method=method, **kwargs)
            await assert_problem(refused, 403, detail="cross-site")
    kwargs = {"headers": {"Sec-Fetch-Site": "same-origin"}}
    if body is not None:
        kwargs["json"] = body
    allowed = await browser.open(path, method=method, **kwargs)
    assert allowed.status_code < 300, await allowed.get_data(as_text=True)
