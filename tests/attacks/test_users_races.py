"""Races on single-use things of the users API, on PostgreSQL: 50 at once.

- Sign-up of one name, spelled in two cases: exactly one account, the rest 409
  (never a 500 from the unique index).
- Share links at the live limit: concurrent creations cannot overshoot it together.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from quart import Quart
from sqlalchemy import func, select

from quart_api.api.share import MAX_LIVE_SHARE_LINKS
from quart_api.db import Database
from quart_api.models import ShareLink, User
from tests.api.conftest import Bearer, MakeUser

CALLERS = 50


async def test_fifty_concurrent_sign_ups_of_one_name_in_two_cases_make_one_account(
    app: Quart,
) -> None:
    client = app.test_client()
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/v1/users",
                json={"username": "Carol" if n % 2 else "carol", "password": f"password {n}"},
            )
            for n in range(CALLERS)
        )
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 409: CALLERS - 1}
    assert await _count(app, select(func.count()).select_from(User)) == 1


async def test_fifty_concurrent_share_links_cannot_overshoot_the_live_limit(
    app: Quart, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    auth = await bearer(alice)
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        for _ in range(MAX_LIVE_SHARE_LINKS - 3):
            session.add(ShareLink.issue(alice.id, None)[0])
        await session.commit()
    client = app.test_client()
    responses = await asyncio.gather(
        *(client.post("/api/v1/users/current/share", headers=auth) for _ in range(CALLERS))
    )
    assert Counter(r.status_code for r in responses) == {201: 3, 409: CALLERS - 3}
    live = select(func.count()).select_from(ShareLink)
    assert await _count(app, live) == MAX_LIVE_SHARE_LINKS


async def _count(app: Quart, query: object) -> int:
    database: Database = app.extensions["database"]
    async with database.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())  # type: ignore[call-overload]
