"""How the service turns view results into responses: no Quart session, models still converted."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from quart import Quart, session


class _Pet(BaseModel):
    name: str
    legs: int


async def test_a_view_returning_a_pydantic_model_is_still_converted(app: Quart) -> None:
    """Plain dicts skip quart-schema's per-response TypeAdapter; models still need it."""

    @app.get("/_test/pet")
    async def pet() -> _Pet:
        return _Pet(name="rex", legs=4)

    response = await app.test_client().get("/_test/pet")
    assert response.status_code == 200
    assert await response.get_json() == {"name": "rex", "legs": 4}


async def test_plain_dict_with_status_and_headers_is_answered_as_is(app: Quart) -> None:
    """quart-schema's conversion would also rename the header (``_`` to ``-``)."""

    @app.get("/_test/plain")
    async def plain() -> tuple[dict[str, object], int, dict[str, str]]:
        return {"snake_case": [1, "two"]}, 202, {"X-Snake_Header": "kept"}

    response = await app.test_client().get("/_test/plain")
    assert response.status_code == 202
    assert await response.get_json() == {"snake_case": [1, "two"]}
    assert response.headers["X-Snake_Header"] == "kept"


async def test_the_service_keeps_no_quart_session(app: Quart) -> None:
    """No session cookie is ever set, and writing one says where log-in state lives."""
    failures: list[str] = []

    @app.get("/_test/session")
    async def write_session() -> dict[str, bool]:
        assert dict(session) == {}
        with pytest.raises(RuntimeError) as refused:
            session["user"] = "alice"
        failures.append(str(refused.value))
        return {"ok": True}

    client = app.test_client()
    response = await client.get("/_test/session", headers={"Cookie": "session=forged"})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert len(failures) == 1
    assert "quart-auth" in failures[0]
