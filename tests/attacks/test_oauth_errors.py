"""Attacks on the OAuth error answers: nothing the client chose is echoed.

RFC 6749 (4.1.2.1, 5.2) allows only printable ASCII without ``"`` and ``\\`` in
``error_description``, and an authorization error travels to the app's redirect URI,
where the app may show it to its user: a parameter name an attacker put in a link
(markup, quotes, any Unicode) must not come back in it.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from tests.oauth.helpers import OAuthTester, callback_params

#: What RFC 6749 allows in error_description: %x20-21 / %x23-5B / %x5D-7E.
DESCRIPTION_CHARACTERS = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")
PLANTED = '<img src=x onerror=alert(1)>"\\é'


async def test_a_repeated_unknown_parameter_is_not_echoed_to_the_apps_redirect_uri(
    oauth: OAuthTester,
) -> None:
    registered = await oauth.register()
    authorization = oauth.request(registered)
    planted = quote(PLANTED)
    response = await oauth.browser.get(f"{authorization.path}&{planted}=1&{planted}=2")
    assert response.status_code == 302
    params = callback_params(response)
    assert params["error"] == "invalid_request"
    assert "<img" not in params["error_description"]
    assert DESCRIPTION_CHARACTERS.match(params["error_description"]), params
    assert "repeated" in params["error_description"]


async def test_a_repeated_known_parameter_is_still_named(oauth: OAuthTester) -> None:
    registered = await oauth.register()
    authorization = oauth.request(registered)
    response = await oauth.browser.get(f"{authorization.path}&scope=users:read")
    params = callback_params(response)
    assert params["error_description"].startswith("The parameter scope is repeated")


async def test_a_repeated_unknown_parameter_is_not_echoed_by_the_token_endpoint(
    oauth: OAuthTester,
) -> None:
    planted = quote(PLANTED)
    for path in ("/oauth/token", "/oauth/revoke"):
        response = await oauth.api.post(
            path,
            data=f"grant_type=authorization_code&{planted}=1&{planted}=2",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        body = await response.get_json()
        assert (response.status_code, body["error"]) == (400, "invalid_request")
        assert DESCRIPTION_CHARACTERS.match(body["error_description"]), body
        assert "<img" not in body["error_description"]
