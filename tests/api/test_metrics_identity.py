"""/metrics allow-list: the client is who the guards say it is (every X-Forwarded-For line)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart
from werkzeug.datastructures import Headers

from tests.api.conftest import make_app

PROXY = {"client": ("10.0.0.254", 40000)}  # the trusted proxy, not on the allow-list


@pytest.fixture
async def behind_a_proxy(tmp_path: Path) -> AsyncIterator[Quart]:
    app = await make_app(tmp_path, trusted_proxy_count=1)
    async with app.test_app():
        yield app


def _forwarded(*lines: str) -> Headers:
    return Headers([("X-Forwarded-For", line) for line in lines])


async def test_a_forged_first_xff_line_cannot_open_the_metrics_allow_list(
    behind_a_proxy: Quart,
) -> None:
    """HAProxy ``option forwardfor`` adds its own line after the client's forged one."""
    client = behind_a_proxy.test_client()
    forged = await client.get(
        "/metrics", headers=_forwarded("127.0.0.1", "203.0.113.9"), scope_base=PROXY
    )
    assert forged.status_code == 404


@pytest.mark.parametrize("hop", ["127.0.0.1", "127.0.0.1:5555", "::ffff:127.0.0.1", "[::1]:443"])
async def test_an_allowed_client_behind_the_proxy_is_recognized_in_any_spelling(
    behind_a_proxy: Quart, hop: str
) -> None:
    client = behind_a_proxy.test_client()
    allowed = await client.get("/metrics", headers=_forwarded(f"6.6.6.6, {hop}"), scope_base=PROXY)
    assert allowed.status_code == 200


async def test_a_hop_that_is_not_an_address_falls_back_to_the_proxy(
    behind_a_proxy: Quart,
) -> None:
    client = behind_a_proxy.test_client()
    response = await client.get("/metrics", headers=_forwarded("localhost"), scope_base=PROXY)
    assert response.status_code == 404, "the proxy's own address is not on the allow-list"
