"""What a hostile client cannot do, checked over HTTP against real servers.

- Choose its own address with ``X-Forwarded-For``: neither to escape its rate limit
  nor to get someone else's address banned, with no trusted proxy and with one.
- Read another user's cached response: two users call the same URLs at the same
  time, round after round, while writes keep invalidating the cache.
- Learn a token from the database: only SHA-256 hashes of bearer and share-link
  secrets are stored.
- Lift a session cookie over plain HTTP or script or send it cross-site: in
  production it is ``Secure``, ``HttpOnly`` and ``SameSite=Strict``.
- Read a share link's secret from the access log of the documented serve command
  (``hypercorn --config hypercorn.toml``), whatever the log format names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from quart_api.settings import RateSpec
from quart_api.testing import RedisServer, free_port
from tests.api.conftest import PASSWORD as API_PASSWORD
from tests.api.conftest import make_app, user_maker
from tests.resilience.apps import VIEW_HEADER
from tests.resilience.conftest import (
    GUARDED,
    READY_SECONDS,
    Service,
    seed_service_database,
    serve,
    server_env,
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

RATE_LIMIT = 5
PROTECT_LIMIT = 3


@pytest.fixture(scope="module", params=[0, 1], ids=["no-proxy", "one-proxy"])
def proxied(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, int]]:
    """(base URL, TRUSTED_PROXY_COUNT) of the guarded app on the session's Redis."""
    env = server_env(
        REDIS_URL=redis_server.url,
        TRUSTED_PROXY_COUNT=str(request.param),
        API_RATE_LIMIT=f"{RATE_LIMIT}/hour",
        PROTECT_LIMIT=f"{PROTECT_LIMIT}/hour",
    )
    logs = tmp_path_factory.mktemp("proxied")
    with serve(GUARDED, env, logs, name=f"proxies-{request.param}") as app:
        yield app.base_url, request.param


def _from(address: str, base_url: str) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any 127.x.y.z is loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base_url, timeout=10, transport=transport)


def _forwarded(spoofed: str, real: str, proxies: int) -> str:
    """X-Forwarded-For as the app receives it: the client's own claim, then, with a
    proxy, the address that proxy saw (proxies append; a client only prepends)."""
    return f"{spoofed}, {real}" if proxies else spoofed


async def test_spoofed_forwarded_for_does_not_escape_the_rate_limit(
    proxied: tuple[str, int], redis_url: str
) -> None:
    base_url, proxies = proxied
    real = "203.0.113.7"  # the address the proxy saw (only meaningful with one)
    async with _from("127.0.0.2", base_url) as client:
        statuses = [
            (
                await client.get(
                    "/limited",
                    headers={
                        "X-Forwarded-For": _forwarded(f"10.{n}.0.1, 10.0.{n}.2", real, proxies)
                    },
                )
            ).status_code
            for n in range(RATE_LIMIT + 5)
        ]
    assert statuses == [200] * RATE_LIMIT + [429] * 5


async def test_spoofed_forwarded_for_cannot_get_another_address_banned(
    proxied: tuple[str, int], redis_url: str
) -> None:
    base_url, proxies = proxied
    # Without a proxy, addresses are the sockets' own; with one, what the proxy appends.
    attacker, victim = (
        ("127.0.0.3", "127.0.0.4") if not proxies else ("198.51.100.66", "198.51.100.99")
    )
    async with _from("127.0.0.3", base_url) as attacker_client:
        failures = [
            await attacker_client.get(
                f"/guess/miss-{n}",
                headers={"X-Forwarded-For": _forwarded(victim, attacker, proxies)},
            )
            for n in range(PROTECT_LIMIT + 2)
        ]
        attacker_after = await attacker_client.get(
            "/guess/ok", headers={"X-Forwarded-For": _forwarded(victim, attacker, proxies)}
        )
    async with _from("127.0.0.4", base_url) as victim_client:
        victim_call = await victim_client.get(
            "/guess/ok", headers={"X-Forwarded-For": victim} if proxies else {}
        )
    reached_view = [bool(r.headers.get(VIEW_HEADER)) for r in failures]
    assert reached_view == [True] * PROTECT_LIMIT + [False] * 2, "the attacker itself is banned"
    assert attacker_after.status_code == 404
    assert VIEW_HEADER not in attacker_after.headers
    assert victim_call.status_code == 200, "the address the attacker named is not banned"
    assert victim_call.headers[VIEW_HEADER] == "1"


async def test_cached_responses_never_reach_another_user(service: Service) -> None:
    """Alice and Bob call the same three URLs concurrently, 25 rounds; before each
    round Alice renames herself, which invalidates every cached users read, so each
    round starts with concurrent misses that both users' requests race to fill.

    Every answer must be the caller's own: ``/current`` is the caller, and an
    e-mail address appears only on the caller's own record (the service shows it
    to self and admins only), so an entry served to the wrong user shows at once.
    """
    alice_id = str(service.user_ids["alice"])
    urls = ["/api/v1/users/current", "/api/v1/users", f"/api/v1/users/{alice_id}"]
    labels: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        for round_ in range(25):
            renamed = await http.patch(
                "/api/v1/users/current",
                json={"full_name": f"Alice {round_}"},
                headers=service.bearer("alice"),
            )
            assert renamed.status_code == 200, renamed.text
            calls = [(user, url) for _ in range(3) for url in urls for user in ("alice", "bob")]
            responses = await asyncio.gather(
                *(http.get(url, headers=service.bearer(user)) for user, url in calls)
            )
            for (user, url), response in zip(calls, responses, strict=True):
                assert response.status_code == 200, response.text
                _assert_own_view(response.json(), user, url, service)
                labels[response.headers.get("X-Cache", "none")] += 1
    # The cache really took part: entries were stored and served.
    assert labels["miss"] > 0, labels
    assert labels["hit"] > 0, labels


def _assert_own_view(body: dict[str, Any], user: str, url: str, service: Service) -> None:
    own_id = str(service.user_ids[user])
    records = body["data"] if isinstance(body["data"], list) else [body["data"]]
    for record in records:
        if record["id"] == own_id:
            assert record["email"] == f"{user}@example.org", (user, url, record)
        else:
            assert "email" not in record, f"{user} got another user's view of {url}: {record}"
    if url.endswith("/current"):
        assert body["data"]["id"] == own_id, (user, body)


async def test_only_hashes_of_secrets_are_stored(service: Service) -> None:
    """The database holds the SHA-256 hex digest of each bearer and share-link secret,
    never the secret itself, in any column of any table.

    A token is found by one indexed equality on that digest (``WHERE token_hash =
    sha256(presented)``, the unique index ``uq_api_tokens_token_hash``): no
    comparison of secrets happens in Python, and the time the index takes depends on
    the digest of what the client sent, not on how much of a real secret it guessed,
    which is what "constant time" asks of the comparison. The plan is checked below.
    """
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        created = await http.post(
            "/api/v1/auth/tokens",
            json={"name": "fresh", "scopes": ["users:read"]},
            headers=service.bearer("bob"),
        )
        shared = await http.post("/api/v1/users/current/share", headers=service.bearer("bob"))
        assert created.status_code == shared.status_code == 201, (created.text, shared.text)
        fresh = created.json()["data"]["token"]
        share = shared.json()["data"]["token"]
        works = await http.get(
            "/api/v1/users/current", headers={"Authorization": f"Bearer {fresh}"}
        )
        assert works.status_code == 200
    secrets_ = [fresh, share, *service.tokens.values()]

    dsn = service.database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        dump = ""
        for table in ("users", "api_tokens", "share_links"):
            rows = await connection.fetch(f"SELECT * FROM {table}")
            dump += "\n".join(str(dict(row)) for row in rows)
        stored = {
            r["token_hash"] for r in await connection.fetch("SELECT token_hash FROM api_tokens")
        }
        shared_stored = {
            r["token_hash"] for r in await connection.fetch("SELECT token_hash FROM share_links")
        }
        await connection.execute("SET enable_seqscan = off")  # a 3-row table: ask for the index
        plan = "\n".join(
            r[0]
            for r in await connection.fetch(
                "EXPLAIN SELECT id FROM api_tokens WHERE token_hash = $1", "0" * 64
            )
        )
    finally:
        await connection.close()
    for secret in secrets_:
        assert secret not in dump
    assert {_sha256(s) for s in [fresh, *service.tokens.values()]} <= stored
    assert _sha256(share) in shared_stored
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in stored | shared_stored)
    assert "uq_api_tokens_token_hash" in plan, plan


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def test_production_session_cookie_is_secure_httponly_samesite(tmp_path: Path) -> None:
    app = await make_app(tmp_path, app_env="production", secret_key=secrets.token_urlsafe(36))
    assert len(app.config["SECRET_KEY"]) == 48
    async with app.test_app():
        await user_maker(app)("carol")
        response = await app.test_client().post(  # production is served over TLS
            "/api/v1/auth/login",
            json={"username": "carol", "password": API_PASSWORD},
            scheme="https",
        )
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    attributes = {part.strip().split("=", 1)[0].lower(): part for part in cookie.split(";")}
    assert "secure" in attributes, cookie
    assert "httponly" in attributes, cookie
    assert attributes["samesite"].strip().lower() == "samesite=strict", cookie


async def test_unknown_bearer_tokens_do_not_escape_the_ip_limit(tmp_path: Path) -> None:
    app = await make_app(tmp_path, api_rate_limit=RateSpec(5, 60))
    async with app.test_app():
        client = app.test_client()
        statuses = [
            (
                await client.get("/api/v1/users", headers={"Authorization": f"Bearer guess-{n}"})
            ).status_code
            for n in range(8)
        ]
    assert statuses == [401] * 5 + [429] * 3


# -- the access log never shows a share secret ---------------------------------------

#: An access-log format naming every atom that carries the path, query or referrer.
EVERY_URL_ATOM = "%(r)s|%(R)s|%(U)s|%(Uq)s|%(q)s|%(f)s|%({referer}i)s|%(s)s"


@contextlib.contextmanager
def _served_with_toml(env: dict[str, str], log: Path, *extra: str) -> Iterator[str]:
    """The documented serve command (``hypercorn --config hypercorn.toml``) on a free port."""
    port = free_port()
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--config", "hypercorn.toml",
             "--bind", f"127.0.0.1:{port}", *extra, "quart_api.app:create_app()"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + READY_SECONDS
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


@pytest.mark.parametrize("log_format", [None, EVERY_URL_ATOM], ids=["toml", "every-url-atom"])
async def test_share_secrets_never_reach_the_access_log(
    tmp_path: Path, log_format: str | None
) -> None:
    """Share links used the canonical way and in every spelling a client may send
    (repeated slashes, capitals, percent-encoding, a query, a referrer) leave no
    secret in the log."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    tokens, _ = await seed_service_database(database_url, ["alice"])
    env = server_env(DATABASE_URL=database_url)
    log = tmp_path / "hypercorn.log"
    extra = () if log_format is None else ("--access-logformat", log_format)
    with _served_with_toml(env, log, *extra) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            auth = {"Authorization": f"Bearer {tokens['alice']}"}
            created = (await http.post("/api/v1/users/current/share", headers=auth)).json()
            secret, url = created["data"]["token"], created["data"]["url"]
            statuses = [
                (await http.get(url)).status_code,
                (await http.get(url + "?utm=1")).status_code,
                (await http.get(url.replace("/share/", "//share//"))).status_code,
                (await http.get(url.upper())).status_code,
                (await http.get(url.replace("/share/", "/%73hare/"))).status_code,
                (await http.get(url.replace("/share/", "/share%2F"))).status_code,
                (
                    await http.get("/healthz", headers={"Referer": f"https://x.example{url}"})
                ).status_code,
            ]
            revoked = await http.delete(
                f"/api/v1/users/current/share/{created['data']['id']}", headers=auth
            )
            gone = (await http.get(url)).status_code
    text = log.read_text()
    assert statuses[:2] == [200, 200], statuses
    assert (revoked.status_code, gone) == (204, 404)
    assert secret not in text
    assert secret.upper() not in text
    assert text.count("/share/[redacted]") >= 4, text  # the access log did log the calls
