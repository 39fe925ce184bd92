"""Attacks on the access log: an OAuth authorization code must not land in it.

The consent's answer sends the user back to the app with ``?code=<code>`` in its
``Location``; an operator's ``access_log_format`` may name that header (and the
query atoms), and a log is read by more people than the database is. Served by the
documented command (``hypercorn --config hypercorn.toml``) with every URL atom.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from quart_api.oauth.pkce import s256_challenge
from quart_api.testing import free_port
from tests.oauth.helpers import REDIRECT_URI
from tests.resilience.conftest import PASSWORD, seed_service_database, server_env

ROOT = Path(__file__).resolve().parents[2]
EVERY_URL_ATOM = "%(r)s|%(R)s|%(U)s|%(Uq)s|%(q)s|%(f)s|%({referer}i)s|%({location}o)s|%(s)s"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextlib.contextmanager
def _serve(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--config", "hypercorn.toml",
             "--bind", f"127.0.0.1:{port}", "--access-logformat", EVERY_URL_ATOM,
             "quart_api.app:create_app()"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            yield base_url
        finally:
            server.terminate()  # hypercorn flushes its log on the way out
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)


async def test_an_authorization_code_never_reaches_the_access_log(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    tokens, _ = await seed_service_database(database_url, ["alice"])
    log = tmp_path / "hypercorn.log"
    verifier = "v" * 64
    with _serve(server_env(DATABASE_URL=database_url), log) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            registered = await http.post(
                "/api/v1/oauth/clients",
                json={"client_name": "Logged", "redirect_uris": [REDIRECT_URI],
                      "token_endpoint_auth_method": "none"},
                headers={"Authorization": f"Bearer {tokens['alice']}"},
            )  # fmt: skip
            client_id = registered.json()["data"]["client_id"]
            login = {"username": "alice", "password": PASSWORD}
            assert (await http.post("/api/v1/auth/login", json=login)).status_code == 200
            query = urlencode(
                {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
                 "scope": "users:read", "state": "s", "code_challenge": s256_challenge(verifier),
                 "code_challenge_method": "S256"}
            )  # fmt: skip
            page = await http.get(f"/oauth/authorize?{query}")
            match = _CSRF.search(page.text)
            assert match is not None, page.text
            allowed = await http.post(
                f"/oauth/authorize?{query}",
                data={"csrf_token": match.group(1), "decision": "allow"},
                headers={"Origin": base_url, "Sec-Fetch-Site": "same-origin"},
            )
            assert allowed.status_code == 303, allowed.text
            code = parse_qs(urlsplit(allowed.headers["Location"]).query)["code"][0]
            exchanged = await http.post(
                "/oauth/token",
                data={"grant_type": "authorization_code", "code": code, "client_id": client_id,
                      "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
            )  # fmt: skip
            assert exchanged.status_code == 200, exchanged.text
    text = log.read_text()
    assert "/oauth/authorize" in text, text  # the access log did log the flow
    assert "code=[redacted]" in text, text
    assert code not in text
