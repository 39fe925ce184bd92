"""``examples/oauth_client.py`` against the app under hypercorn: the user's side of the
consent is driven over HTTP (log-in form, then Allow), as a browser would post it."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from quart_api.models import OAuthGrant
from tests.api.conftest import PASSWORD
from tests.oauth.serving import ROOT, register_app, serve

pytestmark = pytest.mark.slow

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _allow_as_alice(authorize_url: str) -> str:
    """Sign in and press Allow on the pages ``authorize_url`` leads to; the callback URL."""
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        login_page = browser.get(authorize_url)
        assert login_page.status_code == 200, login_page.text
        path = authorize_url.split("?", 1)[1]
        base = authorize_url.split("/oauth/", 1)[0]
        logged_in = browser.post(
            f"{base}/oauth/authorize/login?{path}",
            data={"csrf_token": _CSRF.findall(login_page.text)[0], "username": "alice",
                  "password": PASSWORD},
        )  # fmt: skip
        assert logged_in.status_code == 200, logged_in.text  # the consent page
        consent = logged_in
        allowed = browser.post(
            f"{base}/oauth/authorize?{path}",
            data={"csrf_token": _CSRF.findall(consent.text)[0], "decision": "allow"},
        )
        assert allowed.status_code == 303, allowed.text
        return allowed.headers["Location"]


@pytest.mark.parametrize("method", ["none", "client_secret_basic"])
def test_example_client_runs_the_flow_and_reads_the_current_user(
    pg_database: str, tmp_path: Path, method: str
) -> None:
    """On a pool of one connection, so a step of the flow that held its connection
    while waiting for a second would wait out the database timeout and fail."""
    with serve(pg_database, tmp_path / "hypercorn.log", DATABASE_POOL_SIZE="1") as served:
        registered = register_app(served, "http://127.0.0.1/callback", method)
        secret = ["--client-secret", registered["client_secret"]] if method != "none" else []
        example = subprocess.Popen(
            [sys.executable, "examples/oauth_client.py", "--server", served.url,
             "--client-id", registered["client_id"], *secret, "--no-browser", "--revoke",
             "--timeout", "60"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert example.stdout is not None
            lines = [example.stdout.readline(), example.stdout.readline()]
            authorize_url = lines[1].strip()
            assert authorize_url.startswith(f"{served.url}/oauth/authorize?"), lines
            callback = _allow_as_alice(authorize_url)
            assert callback.startswith("http://127.0.0.1:")
            assert httpx.get(callback, timeout=10).status_code == 200
            output, _ = example.communicate(timeout=60)
        finally:
            if example.poll() is None:
                example.kill()
                example.wait()
        assert example.returncode == 0, output
        assert '"username": "alice"' in output
        assert "Granted scope: users:read" in output
        assert "Revoked the app's access." in output
    revoked = asyncio.run(_revoked_grants(pg_database))
    assert revoked == [True], "the one grant the example made, revoked by --revoke"


async def _revoked_grants(database_url: str) -> list[bool]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(OAuthGrant.revoked_at))
            return [revoked_at is not None for (revoked_at,) in rows]
    finally:
        await engine.dispose()
