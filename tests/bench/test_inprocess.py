"""bench/inprocess.py: the in-process driver answers like a server and measures end to end.

The driver is checked against a real Quart app (status, body, query string,
headers reach the view); the smoke run starts the real servers, seeds a small
database and measures bare and the uncached users list for one short round.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, request

from bench.apps import BODY, bare_app
from bench.inprocess import AsgiDriver, parse_args
from tests.conftest import run_bounded

ROOT = Path(__file__).resolve().parent.parent.parent


async def test_the_driver_gets_status_body_and_sends_query_and_headers() -> None:
    app = Quart(__name__)

    @app.get("/echo")
    async def echo() -> tuple[dict[str, Any], int]:
        return {"page": request.args.get("page"), "auth": request.headers.get("Authorization")}, 201

    driver = AsgiDriver(app, {"Authorization": "Bearer x"})
    answer = await driver.get("/echo?page=3")
    assert answer.status == 201
    assert json.loads(answer.body) == {"page": "3", "auth": "Bearer x"}


async def test_the_driver_serves_the_bare_app_and_its_404() -> None:
    driver = AsgiDriver(bare_app())
    ok = await driver.get("/ok")
    missing = await driver.get("/nope")
    assert (ok.status, missing.status) == (200, 404)
    assert b"true" in ok.body
    assert BODY == {"ok": True}


async def test_the_driver_names_one_of_n_clients_per_request_in_x_forwarded_for() -> None:
    app = Quart(__name__)

    @app.get("/who")
    async def who() -> dict[str, Any]:
        return {"xff": request.headers.getlist("X-Forwarded-For")}

    async def seen(driver: AsgiDriver) -> list[str]:
        found = []
        for _ in range(200):
            [address] = json.loads((await driver.get("/who")).body)["xff"]
            found.append(address)
        return found

    three = await seen(AsgiDriver(app, clients=3, seed="a"))
    assert set(three) == {"10.0.0.0", "10.0.0.1", "10.0.0.2"}
    many = await seen(AsgiDriver(app, clients=1_000_000, seed="a"))
    assert len(set(many)) > 190  # a million clients: nearly every request a new one
    assert await seen(AsgiDriver(app, clients=1_000_000, seed="a")) == many  # reproducible
    assert not set(many) & set(await seen(AsgiDriver(app, clients=1_000_000, seed="b")))
    assert json.loads((await AsgiDriver(app).get("/who")).body) == {"xff": []}


def test_counts_below_one_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--requests", "0"])


@pytest.mark.slow
def test_smoke_run_measures_bare_and_the_uncached_list() -> None:
    code, output = run_bounded(
        ["bench.inprocess", "--rounds", "1", "--requests", "50", "--users", "100"],
        ROOT,
        180,
        "in-process bench smoke run",
    )
    assert code == 0, output[-4000:]
    rows = dict(re.findall(r"^(bare|db-uncached)\s+(\d+)", output, re.MULTILINE))
    assert set(rows) == {"bare", "db-uncached"}, output[-2000:]
    assert all(int(value) > 0 for value in rows.values())
