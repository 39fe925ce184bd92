"""The service on PostgreSQL for the OAuth tests, and a logged-in browser-like client.

Each test gets its own PostgreSQL database (tables from the models), memory guards
with roomy limits, and cheap password hashing (``tests/api/conftest.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol

from quart_api.models import User
from tests.api.conftest import Bearer, MakeUser, bearer_maker, make_app, user_maker
from tests.api.helpers import logged_in
from tests.oauth.helpers import OAuthTester


@pytest.fixture
async def app(tmp_path: Path, pg_database: str) -> AsyncIterator[Quart]:
    app = await make_app(tmp_path, database_url=pg_database)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> TestClientProtocol:
    return app.test_client()


@pytest.fixture
def make_user(app: Quart) -> MakeUser:
    return user_maker(app)


@pytest.fixture
def bearer(app: Quart) -> Bearer:
    return bearer_maker(app)


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user("alice")


@pytest.fixture
async def developer(make_user: MakeUser) -> User:
    """The user who registers the apps (not the one who authorizes them)."""
    return await make_user("developer")


@pytest.fixture
async def oauth(app: Quart, bearer: Bearer, developer: User, alice: User) -> OAuthTester:
    """Registers apps as ``developer`` and drives alice's browser through the flow."""
    return OAuthTester(app, await bearer(developer), await logged_in(app, "alice"))


AppMaker = Callable[..., Awaitable[Quart]]


@pytest.fixture
async def make_oauth_app(tmp_path: Path, pg_database: str) -> AsyncIterator[AppMaker]:
    """Another app on the test's database, with changed settings (served until the end)."""
    async with AsyncExitStack() as stack:

        async def make(**changes: Any) -> Quart:
            app = await make_app(tmp_path, database_url=pg_database, **changes)
            await stack.enter_async_context(app.test_app())
            return app

        yield make
