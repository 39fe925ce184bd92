"""Attacks on the users API's cache: query parameters the views never read.

Each distinct query used to be an entry of its own, so ``?junk=<random>`` ran the
database query on every request (a miss) and filled memcached with copies of one page.
The list and the read name the parameters they read (``@cached(query=...)``); anything
else a client adds is served from the one entry.
"""

from __future__ import annotations

from pathlib import Path

from quart_api.db import Database
from tests.api.conftest import bearer_maker, make_app, user_maker
from tests.api.helpers import settled
from tests.statements import sent_to

USERS = "/api/v1/users"


async def test_random_query_params_on_the_users_list_cost_no_sql_and_no_new_entry(
    tmp_path: Path,
) -> None:
    app = await make_app(tmp_path, auth_cache_seconds=60.0)
    async with app.test_app():
        alice = await user_maker(app)("alice")
        auth = await bearer_maker(app)(alice)
        database: Database = app.extensions["database"]
        client = app.test_client()
        first = await client.get(f"{USERS}?page=1", headers=auth)
        await settled(app)
        with sent_to(database) as sent:
            junk = [
                await client.get(f"{USERS}?page=1&junk={n}&page={n}", headers=auth)
                for n in range(20)
            ]
            await settled(app)
    assert first.headers["X-Cache"] == "miss"
    assert {r.headers["X-Cache"] for r in junk} == {"hit"}
    assert sent.statements() == []
    assert {await r.get_data() for r in junk} == {await first.get_data()}


async def test_random_query_params_on_a_users_read_cost_no_sql(tmp_path: Path) -> None:
    app = await make_app(tmp_path, auth_cache_seconds=60.0)
    async with app.test_app():
        alice = await user_maker(app)("alice")
        auth = await bearer_maker(app)(alice)
        database: Database = app.extensions["database"]
        client = app.test_client()
        await client.get(f"{USERS}/current", headers=auth)
        await settled(app)
        with sent_to(database) as sent:
            junk = [await client.get(f"{USERS}/current?x={n}", headers=auth) for n in range(20)]
            await settled(app)
    assert {r.headers["X-Cache"] for r in junk} == {"hit"}
    assert sent.statements() == []
