"""No response anywhere carries a password, a password hash or a token hash.

One scenario calls every route (successes and failures), records every response
the app sends, and sweeps them for each secret the scenario created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, Response, request
from quart.typing import TestClientProtocol as Client
from sqlalchemy import update

from quart_api import passwords
from quart_api.db import Database
from quart_api.models import User, hash_secret
from tests.api.conftest import PASSWORD, make_app
from tests.api.helpers import logged_in
from tests.oauth.helpers import call_every_oauth_route

USERS = "/api/v1/users"
SUBMITTED = [PASSWORD, "second passphrase", "third passphrase", "fourth passphrase", "short"]


@dataclass
class Recorder:
    """Every response of the app, and every hash it computed."""

    responses: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    password_hashes: list[str] = field(default_factory=list)


class _RecordingHasher:
    """The app's argon2 hasher, noting every hash it makes."""

    def __init__(self, hasher: Any, recorder: Recorder) -> None:
        self._hasher = hasher
        self._recorder = recorder

    def hash(self, password: str | bytes, **kwargs: Any) -> str:
        digest: str = self._hasher.hash(password, **kwargs)
        self._recorder.password_hashes.append(digest)
        return digest

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hasher, name)


async def _recording_app(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> Quart:
    app = await make_app(tmp_path)
    monkeypatch.setattr(passwords, "_hasher", _RecordingHasher(passwords._hasher, recorder))

    @app.after_request
    async def record(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else request.path
        raw = b"\n".join(
            [f"{k}: {v}".encode() for k, v in response.headers.items()]
            + [await response.get_data()]
        )
        recorder.responses.append((request.method, rule, response.status_code, raw))
        return response

    return app


async def test_no_response_contains_a_password_or_a_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    app = await _recording_app(tmp_path, recorder, monkeypatch)
    async with app.test_app():
        secrets = await _call_every_route(app)
    expected = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(("/api/v1", "/healthz", "/readyz", "/openapi.json"))
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    succeeded = {(m, r) for m, r, status, _ in recorder.responses if status < 300}
    assert expected <= succeeded, expected - succeeded
    assert len(recorder.password_hashes) >= 4
    forbidden = [*SUBMITTED, *recorder.password_hashes, "$argon2"]
    forbidden += [hash_secret(secret) for secret in secrets]
    for method, rule, status, raw in recorder.responses:
        text = raw.decode("utf-8", "replace")
        for needle in forbidden:
            assert needle not in text, (method, rule, status, needle)
    shown = [
        (method, rule)
        for method, rule, _, raw in recorder.responses
        for secret in secrets
        if secret.encode() in raw
    ]
    assert sorted(set(shown)) == [
        ("POST", "/api/v1/auth/tokens"),
        ("POST", "/api/v1/oauth/clients"),
        ("POST", "/api/v1/oauth/clients/<client_id>/secret"),
        ("POST", "/api/v1/users/current/share"),
        ("POST", "/oauth/authorize"),  # the code, in the redirect to the app
        ("POST", "/oauth/token"),
    ]


async def _call_every_route(app: Quart) -> list[str]:
    """Drive every route through successes and failures; return the token secrets issued."""
    anonymous = app.test_client()
    client = app.test_client()
    second, third, fourth = SUBMITTED[1:4]
    secrets: list[str] = []

    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/metrics"):
        await anonymous.get(path)
    await anonymous.post(USERS, json={"username": "alice", "password": "short"})
    await anonymous.post(USERS, json={"username": "a!", "password": PASSWORD, "is_admin": True})
    created = await anonymous.post(USERS, json={"username": "alice", "password": PASSWORD})
    alice_id = (await created.get_json())["data"]["id"]
    await anonymous.post(USERS, json={"username": "ALICE", "password": PASSWORD})
    await client.post("/api/v1/auth/login", json={"username": "alice", "password": second})
    await client.post("/api/v1/auth/login", json={"username": "nobody", "password": second})
    await client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})

    await client.get(USERS)
    await client.get(f"{USERS}/{alice_id}")
    await client.get(f"{USERS}/current")
    await client.patch(f"{USERS}/current", json={"full_name": "Alice", "password_hash": "x"})
    await client.patch(f"{USERS}/current", json={"full_name": "Alice"})
    await client.put(f"{USERS}/current", json={"password": second})  # 422: needs the old one
    await client.put(f"{USERS}/current", json={"full_name": "Alice P"})
    await client.patch(f"{USERS}/current", json={"password": "short"})
    await client.post(
        f"{USERS}/current/password", json={"old_password": PASSWORD, "new_password": third}
    )
    await client.post(
        f"{USERS}/current/password", json={"old_password": second, "new_password": third}
    )
    await client.post(
        f"{USERS}/current/password", json={"old_password": third, "new_password": "short"}
    )

    token = await client.post(
        "/api/v1/auth/tokens", json={"name": "t", "scopes": ["users:read", "users:write"]}
    )
    token_data = (await token.get_json())["data"]
    secrets.append(token_data["token"])
    await client.post("/api/v1/auth/tokens", json={"name": "t", "scopes": ["nope"]})
    await client.get("/api/v1/auth/tokens")
    auth = {"Authorization": f"Bearer {token_data['token']}"}
    await anonymous.get(f"{USERS}/current", headers=auth)
    await anonymous.post("/api/v1/auth/tokens", json={"name": "x", "scopes": []}, headers=auth)

    share = await client.post(f"{USERS}/current/share")
    share_data = (await share.get_json())["data"]
    secrets.append(share_data["token"])
    await anonymous.get(f"/api/v1/share/{share_data['token']}")
    await anonymous.get("/api/v1/share/unknown")
    await client.get(f"{USERS}/current/share")
    await client.delete(f"{USERS}/current/share/{share_data['id']}")
    secrets += await call_every_oauth_route(app, client, second)

    admin = await _as_admin(app, "alice", third)
    await admin.put(f"{USERS}/by-username/bob", json={"password": fourth})
    await admin.put(f"{USERS}/by-username/bob", json={"password": "short"})
    bob = await logged_in(app, "bob", fourth)
    bob_id = (await (await bob.get(f"{USERS}/current")).get_json())["data"]["id"]
    await bob.delete(f"{USERS}/{alice_id}")
    await bob.post("/api/v1/auth/logout")
    await admin.delete(f"{USERS}/{bob_id}")
    await client.delete(f"/api/v1/auth/tokens/{token_data['id']}")
    await anonymous.get(f"{USERS}/current", headers=auth)
    await admin.delete(f"{USERS}/current")
    return secrets


async def _as_admin(app: Quart, username: str, password: str) -> Client:
    """`username` made an admin (directly in the database) and logged in again."""
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        await session.execute(update(User).values(is_admin=True))
        await session.commit()
    return await logged_in(app, username, password)
