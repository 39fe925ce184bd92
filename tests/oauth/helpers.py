"""Driving the OAuth flow in tests: register an app, authorize it, exchange the code."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from quart import Quart
from quart.typing import TestClientProtocol as Client
from quart.wrappers import Response

from quart_api.oauth.pkce import s256_challenge

REDIRECT_URI = "https://app.example.com/callback"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def pkce_pair() -> tuple[str, str]:
    """A fresh (verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256_challenge(verifier)


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def csrf_token(response: Response) -> str:
    """The form token of a rendered page."""
    html = await response.get_data(as_text=True)
    match = _CSRF.search(html)
    assert match is not None, html
    return match.group(1)


def callback_params(response: Response) -> dict[str, str]:
    """The query parameters of a redirect's Location (each once)."""
    location = response.headers["Location"]
    values = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in values.values()), location
    return {k: v[0] for k, v in values.items()}


@dataclass
class Authorization:
    """An authorization request in flight: its query, its PKCE verifier, its answer."""

    query: str
    verifier: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/oauth/authorize?{self.query}"


class OAuthTester:
    """Registers apps (as their developer) and drives one user's browser session."""

    def __init__(self, app: Quart, developer_auth: dict[str, str], browser: Client) -> None:
        self.app = app
        self.developer_auth = developer_auth
        self.browser = browser
        self.api = app.test_client()

    async def register(self, **fields: Any) -> dict[str, Any]:
        """A new app (public by default): its registration body, secret included."""
        body = {
            "client_name": "Photo Printer",
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            **fields,
        }
        response = await self.api.post(
            "/api/v1/oauth/clients", json=body, headers=self.developer_auth
        )
        assert response.status_code == 201, await response.get_data(as_text=True)
        data: dict[str, Any] = (await response.get_json())["data"]
        return data

    def request(self, app: dict[str, Any], **overrides: str | None) -> Authorization:
        """An authorization request of ``app`` (overrides: None drops a parameter)."""
        verifier, challenge = pkce_pair()
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": app["client_id"],
            "redirect_uri": app["redirect_uris"][0],
            "scope": "users:read",
            "state": secrets.token_urlsafe(12),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **overrides,
        }
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return Authorization(query, verifier)

    async def consent_page(self, authorization: Authorization) -> Response:
        response = await self.browser.get(authorization.path)
        assert response.status_code == 200, await response.get_data(as_text=True)
        return response

    async def decide(
        self, authorization: Authorization, decision: str = "allow", **headers: str
    ) -> Response:
        """Open the consent page and press Allow (or Deny)."""
        token = await csrf_token(await self.consent_page(authorization))
        return await self.browser.post(
            authorization.path,
            form={"csrf_token": token, "decision": decision},
            headers=headers,
        )

    async def code(self, authorization: Authorization) -> str:
        """Allow, and return the code the app's callback receives."""
        response = await self.decide(authorization)
        assert response.status_code == 303, await response.get_data(as_text=True)
        authorization.params = callback_params(response)
        return authorization.params["code"]

    async def token(self, form: dict[str, str], headers: dict[str, str] | None = None) -> Response:
        return await self.api.post("/oauth/token", form=form, headers=headers or {})

    async def exchange(
        self,
        app: dict[str, Any],
        authorization: Authorization,
        code: str | None = None,
        **extra: str,
    ) -> Response:
        """Redeem the code as ``app`` would (Basic for a confidential app)."""
        form = {
            "grant_type": "authorization_code",
            "code": code or authorization.params["code"],
            "redirect_uri": app["redirect_uris"][0],
            "code_verifier": authorization.verifier,
            **extra,
        }
        headers = {}
        method = app["token_endpoint_auth_method"]
        if method == "none":
            form["client_id"] = app["client_id"]
        elif method == "client_secret_post":
            form.update(client_id=app["client_id"], client_secret=app["client_secret"])
        else:
            headers = basic(app["client_id"], app["client_secret"])
        return await self.token(form, headers)

    async def tokens(self, app: dict[str, Any], **request: str | None) -> dict[str, Any]:
        """A whole flow: authorize, consent, exchange; the token response body."""
        authorization = self.request(app, **request)
        await self.code(authorization)
        response = await self.exchange(app, authorization)
        assert response.status_code == 200, await response.get_data(as_text=True)
        body: dict[str, Any] = await response.get_json()
        return body

    async def refresh(self, app: dict[str, Any], refresh_token: str, **extra: str) -> Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
        headers = {}
        if app["token_endpoint_auth_method"] == "none":
            form["client_id"] = app["client_id"]
        elif app["token_endpoint_auth_method"] == "client_secret_post":
            form.update(client_id=app["client_id"], client_secret=app["client_secret"])
        else:
            headers = basic(app["client_id"], app["client_secret"])
        return await self.token(form, headers)

    async def me(self, access_token: str) -> Response:
        return await self.api.get(
            "/api/v1/users/current", headers={"Authorization": f"Bearer {access_token}"}
        )


async def call_every_oauth_route(app: Quart, user: Client, wrong_password: str) -> list[str]:
    """Every OAuth route driven by ``user`` (a logged-in client) through successes and a
    few failures, for sweeps over all responses; returns every secret issued."""
    clients = "/api/v1/oauth/clients"
    created = await user.post(
        clients,
        json={"client_name": "Sweep", "redirect_uris": [REDIRECT_URI],
              "token_endpoint_auth_method": "client_secret_post"},
    )  # fmt: skip
    registered: dict[str, Any] = (await created.get_json())["data"]
    path = f"{clients}/{registered['client_id']}"
    await user.post(clients, json={"client_name": "", "redirect_uris": ["http://x.example/"]})
    await user.get(clients)
    await user.get(path)
    await user.patch(path, json={"client_name": "Sweep 2"})
    rotated = (await (await user.post(f"{path}/secret")).get_json())["data"]["client_secret"]
    secrets = [registered["client_secret"], rotated]
    registered["client_secret"] = rotated

    oauth = OAuthTester(app, {}, user)
    authorization = oauth.request(registered)
    anonymous = app.test_client()
    token = await csrf_token(await anonymous.get(authorization.path))
    await anonymous.post(
        f"/oauth/authorize/login?{authorization.query}",
        form={"csrf_token": token, "username": "alice", "password": wrong_password},
    )
    secrets.append(await oauth.code(authorization))
    tokens = await (await oauth.exchange(registered, authorization)).get_json()
    await oauth.exchange(registered, authorization)  # a replay: 400, and revoked
    second = oauth.request(registered)
    await oauth.code(second)
    fresh = await (await oauth.exchange(registered, second)).get_json()
    refreshed = await (await oauth.refresh(registered, fresh["refresh_token"])).get_json()
    secrets += [second.params["code"], tokens["access_token"], tokens["refresh_token"]]
    secrets += [fresh["access_token"], fresh["refresh_token"]]
    secrets += [refreshed["access_token"], refreshed["refresh_token"]]
    await anonymous.get("/.well-known/oauth-authorization-server")
    await anonymous.post(
        "/oauth/revoke",
        form={"token": refreshed["access_token"], "client_id": registered["client_id"],
              "client_secret": rotated},
    )  # fmt: skip
    grants = await (await user.get("/api/v1/oauth/grants")).get_json()
    await user.delete(f"/api/v1/oauth/grants/{grants['data'][0]['id']}")
    await user.delete(path)
    return secrets
