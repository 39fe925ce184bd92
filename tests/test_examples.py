"""The example app, served by a real hypercorn against real Redis and memcached."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quart_api.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture
def example_url(redis_url: str, memcached_servers: str) -> Iterator[str]:
    """``examples/minimal_app.py`` under hypercorn on a free loopback port."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "MEMCACHED_SERVERS": memcached_servers,
        "PYTHONPATH": str(ROOT),
    }
    hypercorn = Path(sys.executable).with_name("hypercorn")
    process = subprocess.Popen(
        [str(hypercorn), "--bind", f"127.0.0.1:{port}", "examples.minimal_app:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"hypercorn exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the example app did not answer within 20 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


async def test_example_app_is_guarded_end_to_end(example_url: str) -> None:
    async with httpx.AsyncClient(base_url=example_url, timeout=5) as client:
        miss = await client.get("/things")
        hit = await client.get("/things")
        assert miss.status_code == hit.status_code == 200
        assert miss.headers["X-Cache"] == "miss"
        assert hit.headers["X-Cache"] == "hit"
        assert hit.json() == miss.json()  # the view ran once
        assert hit.headers["RateLimit-Policy"] == '"ip";q=50;w=3600'
        assert hit.headers["RateLimit"].startswith('"ip";r=48;')
        not_modified = await client.get("/things", headers={"If-None-Match": hit.headers["ETag"]})
        assert not_modified.status_code == 304

        guesses = [(await client.get(f"/things/guess{i}")).status_code for i in range(3)]
        blocked = await client.get("/things/apple")
        assert guesses == [404, 404, 404]
        unrouted = await client.get("/no/such/path")
        assert blocked.status_code == 404
        assert blocked.headers["Content-Type"] == unrouted.headers["Content-Type"]
        assert blocked.content == unrouted.content, "a ban answers as the app's own 404"

        alice = [await client.get("/me", headers={"X-User": "alice"}) for _ in range(6)]
        bob = await client.get("/me", headers={"X-User": "bob"})
        assert [r.status_code for r in alice] == [200] * 5 + [429]
        assert alice[0].json() == {"user": "alice"}
        assert alice[1].headers["X-Cache"] == "hit"
        assert int(alice[-1].headers["Retry-After"]) >= 1
        assert alice[-1].headers["Content-Type"] == "application/problem+json"
        assert bob.status_code == 429, "the per-IP budget of /me is spent too"

    # Another address (127.0.0.2 is loopback too): a fresh IP budget, but the same users.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=example_url, timeout=5, transport=transport) as other:
        alice_elsewhere = await other.get("/me", headers={"X-User": "alice"})
        bob_elsewhere = await other.get("/me", headers={"X-User": "bob"})
    assert alice_elsewhere.status_code == 429, "alice's own budget follows her"
    assert bob_elsewhere.status_code == 200
    assert bob_elsewhere.json() == {"user": "bob"}, "never another user's cached entry"


async def test_example_app_has_default_blueprint_and_exempt_limits(example_url: str) -> None:
    async with httpx.AsyncClient(base_url=example_url, timeout=5) as client:
        hello = await client.get("/hello")
        daily = [(await client.get("/reports/daily")).status_code for _ in range(4)]
        weekly = await client.get("/reports/weekly")
        health = [(await client.get("/healthz")).status_code for _ in range(5)]
    assert hello.headers["RateLimit-Policy"] == '"ip";q=300;w=60', "the default limit"
    assert daily == [200, 200, 200, 429], "the blueprint's limit"
    assert weekly.status_code == 200, "each route of the blueprint has its own budget"
    assert health == [200] * 5
    assert "RateLimit" not in (await _get(example_url, "/healthz")).headers, "@exempt"


async def _get(base_url: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        return await client.get(path)
