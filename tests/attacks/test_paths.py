"""Attacks on routing: path spellings that could reach a route some other way.

werkzeug merges repeated slashes by answering 308 with the merged path, an absolute
URL built from the request's ``Host`` header, in an HTML body a cache may keep. The
service answers such paths as what they are, unknown: 404 problem+json, no redirect.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import make_app

FORGED_HOST = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}


@pytest.mark.parametrize(
    "path",
    ["/api/v1/users//current", "/api/v1//share/abc", "/api//v1/users", "/oauth//authorize"],
)
async def test_doubled_slashes_are_404_problem_json_not_a_redirect_to_a_forged_host(
    tmp_path: Path, path: str
) -> None:
    app = await make_app(tmp_path)
    async with app.test_app():
        response = await app.test_client().get(path, headers=FORGED_HOST)
    assert response.status_code == 404
    assert "Location" not in response.headers
    assert response.content_type == "application/problem+json"
    assert "evil.example" not in await response.get_data(as_text=True)
