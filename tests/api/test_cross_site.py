"""Another site's page cannot make a logged-in browser change anything.

An unsafe request that the session cookie authenticates is 403 problem+json, and
changes nothing, when ``Sec-Fetch-Site`` says another site (``same-site`` included)
or, without that header, ``Origin`` is not this service's own origin: every unsafe
route, body-less POSTs included, and every encoding of an origin a browser or an
attacker can produce. Bearer requests, safe methods, same-origin requests and
clients that send neither header (curl, servers) are unaffected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from tests.api.conftest import PASSWORD, bearer_maker, make_app, user_maker
from tests.api.helpers import assert_problem, logged_in, unchanged_database

USERS = "/api/v1/users"
TOKENS = "/api/v1/auth/tokens"
SHARE = "/api/v1/users/current/share"
EVIL = {"Origin": "https://evil.example"}

#: (method, path, JSON body or None); ``{token}``/``{link}`` are filled per test.
UNSAFE_ROUTES = [
    ("POST", "/api/v1/auth/logout", None),
    ("POST", SHARE, None),
    ("POST", TOKENS, {"name": "csrf", "scopes": ["users:read"]}),
    ("POST", f"{USERS}/current/password", {"old_password": PASSWORD, "new_password": "x" * 12}),
    ("PATCH", f"{USERS}/current", {"full_name": "Mallory was here"}),
    ("PUT", f"{USERS}/current", {"full_name": "Mallory was here"}),
    ("PUT", f"{USERS}/by-username/mallory", {"full_name": "Mallory"}),
    ("DELETE", f"{TOKENS}/{{token}}", None),
    ("DELETE", f"{SHARE}/{{link}}", None),
    ("DELETE", f"{USERS}/current", None),
]

#: What a browser sends on a cross-site request, and what an attacker may try.
CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another origin
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},  # the fetch header wins
    {"Sec-Fetch-Site": "Same-Origin"},  # not a value any browser sends
    {"Origin": "null"},  # sandboxed frames, some redirects
    EVIL,
    {"Origin": "http://localhost.evil.example"},
    {"Origin": "http://evil.example#@localhost"},
    {"Origin": "http://localhost@evil.example"},
    {"Origin": "http://localhost:8080"},  # another port is another origin
    {"Origin": "http://localhost."},  # trailing dot: another site to a browser
    {"Origin": "http://127.0.0.1"},
    {"Origin": "http://localhost/path"},  # not an origin
    {"Origin": "localhost"},
    {"Origin": ""},
]

#: The service's own pages, and clients that are not browsers.
SAME_ORIGIN = [
    {},
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "none"},  # typed or bookmarked by the user
    {"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"},
    {"Origin": "http://localhost"},
    {"Origin": "HTTP://LocalHost"},  # case
    {"Origin": "http://localhost:80"},  # the default port, spelled out
]


async def _alice(app: Quart) -> tuple[Client, dict[str, str], dict[str, str]]:
    """Alice's cookie client, her bearer header, and ids of a token and a share link."""
    alice = await user_maker(app)("alice", admin=True)
    auth = await bearer_maker(app)(alice)
    browser = await logged_in(app, "alice")
    setup = app.test_client()
    token = await setup.post(TOKENS, json={"name": "t", "scopes": []}, headers=auth)
    link = await setup.post(SHARE, headers=auth)
    ids = {
        "token": (await token.get_json())["data"]["id"],
        "link": (await link.get_json())["data"]["id"],
    }
    return browser, auth, ids


async def _send(client: Client, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if body is None:
        return await client.open(path, method=method, headers=headers)
    return await client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), UNSAFE_ROUTES)
async def test_a_cross_site_request_with_the_session_cookie_is_403_on_every_unsafe_route(
    app: Quart, method: str, path: str, body: Any
) -> None:
    browser, _, ids = await _alice(app)
    path = path.format(**ids)
    async with unchanged_database(app):
        for headers in ({"Sec-Fetch-Site": "cross-site"}, EVIL):
            refused = await _send(browser, method, path, body, headers)
            await assert_problem(refused, 403, detail="cross-site")
    # The same request from this site's own pages goes through.
    allowed = await _send(browser, method, path, body, {"Origin": "http://localhost"})
    assert allowed.status_code < 300, await allowed.get_data(as_text=True)


@pytest.mark.parametrize(("method", "path", "body"), UNSAFE_ROUTES)
async def test_a_bearer_request_is_never_refused_as_cross_site(
    app: Quart, method: str, path: str, body: Any
) -> None:
    _, auth, ids = await _alice(app)
    headers = {**auth, "Sec-Fetch-Site": "cross-site", **EVIL}
    response = await _send(app.test_client(), method, path.format(**ids), body, headers)
    assert response.status_code < 300, await response.get_data(as_text=True)


@pytest.mark.parametrize("headers", CROSS_SITE, ids=repr)
async def test_every_spelling_of_a_foreign_origin_is_refused(
    app: Quart, headers: dict[str, str]
) -> None:
    """A body-less POST: a plain HTML form on any site can send one."""
    browser, _, _ = await _alice(app)
    async with unchanged_database(app):
        await assert_problem(await browser.post(SHARE, headers=headers), 403, detail="cross-site")


@pytest.mark.parametrize("headers", SAME_ORIGIN, ids=repr)
async def test_same_origin_and_non_browser_requests_pass(
    app: Quart, headers: dict[str, str]
) -> None:
    browser, _, _ = await _alice(app)
    response = await browser.post(SHARE, headers=headers)
    assert response.status_code == 201, await response.get_data(as_text=True)


async def test_safe_methods_are_answered_whatever_the_origin(app: Quart) -> None:
    browser, _, _ = await _alice(app)
    for method in ("GET", "HEAD", "OPTIONS"):
        response = await browser.open(f"{USERS}/current", method=method, headers=EVIL)
        assert response.status_code in (200, 204), (method, response.status_code)


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Origin": "https://api.example.com"}, True),
        ({"Origin": "https://API.example.com:443"}, True),
        ({"Origin": "http://api.example.com"}, False),  # another scheme
        ({"Origin": "https://api.example.com:8443"}, False),
        ({"Origin": "http://localhost"}, False),  # the Host header no longer counts
        ({"Origin": "https://evil.example", "Host": "evil.example"}, False),  # a forged Host
    ],
    ids=repr,
)
async def test_with_a_public_url_the_origin_is_compared_with_it_not_with_host(
    tmp_path: Path, headers: dict[str, str], allowed: bool
) -> None:
    app = await make_app(tmp_path, public_url="https://api.example.com")
    async with app.test_app():
        browser, _, _ = await _alice(app)
        response = await browser.post(SHARE, headers=headers)
    assert response.status_code == (201 if allowed else 403), await response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        ("[::1]:8102", "http://[::1]:8102", True),
        ("[::1]:8102", "http://[::1]", False),
        ("localhost:443", "https://localhost", True),  # the default port, implied
        ("localhost:8102", "http://localhost:8102", True),
        ("localhost:8102", "http://localhost", False),
        ("LOCALHOST", "http://localhost", True),
        ("evil.example@localhost", "http://localhost", False),  # not a host
    ],
)
async def test_the_host_header_is_parsed_before_it_is_compared(
    app: Quart, host: str, origin: str, allowed: bool
) -> None:
    browser, _, _ = await _alice(app)
    response = await browser.post(SHARE, headers={"Host": host, "Origin": origin})
    assert response.status_code == (201 if allowed else 403), await response.get_data(as_text=True)
