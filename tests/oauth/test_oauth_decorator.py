"""``@oauth(required_scopes=[...])``: the original series' spelling of ``requires_scopes``."""

from __future__ import annotations

from pathlib import Path

import pytest

from quart_api.auth import oauth
from quart_api.guards import rate_limited
from tests.api.conftest import bearer_maker, make_app, user_maker
from tests.api.helpers import assert_problem


async def test_oauth_decorator_requires_the_scopes_like_requires_scopes(tmp_path: Path) -> None:
    app = await make_app(tmp_path)

    @app.get("/api/v1/notes")
    @rate_limited(limit=100)
    @oauth(required_scopes=["users:write"])
    async def notes() -> dict[str, str]:
        return {"notes": "secret"}

    async with app.test_app():
        user = await user_maker(app)("alice")
        client = app.test_client()
        await assert_problem(await client.get("/api/v1/notes"), 401)
        reader = await bearer_maker(app)(user, ("users:read",))
        refused = await client.get("/api/v1/notes", headers=reader)
        await assert_problem(refused, 403)
        assert 'scope="users:write"' in refused.headers["WWW-Authenticate"]
        writer = await bearer_maker(app)(user, ("users:write",))
        allowed = await client.get("/api/v1/notes", headers=writer)
        assert (await allowed.get_json()) == {"notes": "secret"}


def test_oauth_decorator_refuses_unknown_scopes_and_a_bare_string_at_import() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        oauth(required_scopes=["users:admin"])
    with pytest.raises(TypeError, match="list of scopes"):
        oauth(required_scopes="users:read")  # type: ignore[arg-type]
