"""Client identity where the HTTP parser matters: raw bytes to a real hypercorn.

Folded header lines (obs-fold) and very long ``X-Forwarded-For`` values are shaped
by the server's parser before the app sees them, so they are sent over a socket to
the library users' app of the resilience tests, behind one trusted proxy, with a
budget of one request per client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from quart_api.testing import HypercornApp
from tests.resilience.conftest import GUARDED, serve, server_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornApp]:
    env = server_env(TRUSTED_PROXY_COUNT="1", API_RATE_LIMIT="1/hour")
    with serve(GUARDED, env, tmp_path_factory.mktemp("identity"), name="identity") as app:
        yield app


async def _status(app: HypercornApp, *header_lines: bytes) -> int:
    """The status of ``GET /limited`` sent as raw bytes with ``header_lines``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
    try:
        head = b"GET /limited HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        writer.write(head + b"".join(line + b"\r\n" for line in header_lines) + b"\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_a_folded_forwarded_for_line_is_one_list_with_the_proxys_hop_last(
    one_proxy: HypercornApp,
) -> None:
    first = await _status(one_proxy, b"X-Forwarded-For: 6.6.6.1,", b" 203.0.113.21")
    plain = await _status(one_proxy, b"X-Forwarded-For: 203.0.113.21")
    folded_forgery = await _status(
        one_proxy, b"X-Forwarded-For: 6.6.6.2", b"X-Forwarded-For: 6.6.6.3,", b"\t203.0.113.21"
    )
    assert [first, plain, folded_forgery] == [200, 429, 429]


async def test_a_long_forged_prefix_does_not_move_the_client(one_proxy: HypercornApp) -> None:
    forged = b", ".join(b"6.6.%d.%d" % (n // 250, n % 250) for n in range(3000))  # ~33 KB
    first = await _status(one_proxy, b"X-Forwarded-For: " + forged + b", 203.0.113.22")
    again = await _status(one_proxy, b"X-Forwarded-For: 203.0.113.22")
    forged_again = await _status(one_proxy, b"X-Forwarded-For: " + forged[::-1] + b", 203.0.113.22")
    assert [first, again, forged_again] == [200, 429, 429]
