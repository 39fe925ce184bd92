"""The principal cache: a repeated bearer request costs no SQL, and revocation is immediate here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart
from sqlalchemy import event

from quart_api.db import Database
from tests.api.conftest import Bearer, MakeUser, bearer_maker, make_app, user_maker

USERS = "/api/v1/users"


@pytest.fixture
async def cached_app(tmp_path: Path) -> AsyncIterator[Quart]:
    app = await make_app(tmp_path, auth_cache_seconds=30.0)
    async with app.test_app():
        yield app


def _count_statements(app: Quart) -> list[str]:
    database: Database = app.extensions["database"]
    statements: list[str] = []

    @event.listens_for(database.engine.sync_engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    return statements


async def test_a_cached_hit_with_a_known_token_runs_no_sql(cached_app: Quart) -> None:
    make_user: MakeUser = user_maker(cached_app)
    bearer: Bearer = bearer_maker(cached_app)
    auth = await bearer(await make_user("alice"))
    client = cached_app.test_client()
    assert (await client.get(f"{USERS}/current", headers=auth)).status_code == 200
    statements = _count_statements(cached_app)
    response = await client.get(f"{USERS}/current", headers=auth)
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "hit"
    # The first request's last-use write may run meanwhile (a background task, by
    # design outside the request): the second request itself reads nothing.
    assert [s for s in statements if s.lstrip().upper().startswith("SELECT")] == []


async def test_a_revoked_token_is_refused_at_once_despite_the_cache(cached_app: Quart) -> None:
    make_user: MakeUser = user_maker(cached_app)
    alice = await make_user("alice")
    client = cached_app.test_client()
    created = await client.post(
        "/api/v1/auth/tokens",
        json={"name": "t", "scopes": ["users:read", "tokens:write"]},
        headers=await bearer_maker(cached_app)(alice),
    )
    data = (await created.get_json())["data"]
    auth = {"Authorization": f"Bearer {data['token']}"}
    assert (await client.get(f"{USERS}/current", headers=auth)).status_code == 200
    revoked = await client.delete(f"/api/v1/auth/tokens/{data['id']}", headers=auth)
    assert revoked.status_code == 204
    assert (await client.get(f"{USERS}/current", headers=auth)).status_code == 401


async def test_concurrent_requests_with_one_token_look_it_up_once(cached_app: Quart) -> None:
    import asyncio

    auth = await bearer_maker(cached_app)(await user_maker(cached_app)("alice"))
    statements = _count_statements(cached_app)
    client = cached_app.test_client()
    responses = await asyncio.gather(
        *(client.get(f"{USERS}/current", headers=auth) for _ in range(20))
    )
    assert [r.status_code for r in responses] == [200] * 20
    lookups = [s for s in statements if "FROM api_tokens" in s and s.lstrip().startswith("SELECT")]
    assert len(lookups) == 1


async def test_concurrent_requests_with_a_bad_token_all_get_401(cached_app: Quart) -> None:
    import asyncio

    client = cached_app.test_client()
    bad = {"Authorization": "Bearer nope"}
    responses = await asyncio.gather(
        *(client.get(f"{USERS}/current", headers=bad) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [401] * 5
