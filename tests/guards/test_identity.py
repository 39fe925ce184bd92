"""Client identity: X-Forwarded-For only through trusted proxies; IPv6 grouped by network."""

from __future__ import annotations

import pytest

from quart_api.guards import rate_limited
from quart_api.guards._identity import client_address, normalize_address
from tests.guards.conftest import Backend, make_app, peer, serving


async def _statuses(
    backend: Backend, proxies: int, requests: list[tuple[str, str | None]]
) -> list[int]:
    """Status of each ``(peer, X-Forwarded-For)`` request against a 1-a-minute limit."""
    app, _ = make_app(backend, trusted_proxy_count=proxies)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    statuses = []
    async with serving(app) as client:
        for address, forwarded in requests:
            headers = {"X-Forwarded-For": forwarded} if forwarded else {}
            statuses.append(
                (await client.get("/things", headers=headers, **peer(address))).status_code
            )
    return statuses


async def test_forwarded_for_is_ignored_without_trusted_proxies(backend: Backend) -> None:
    statuses = await _statuses(
        backend, 0, [("203.0.113.5", "1.1.1.1"), ("203.0.113.5", "2.2.2.2"), ("203.0.113.6", None)]
    )
    assert statuses == [200, 429, 200], "a client cannot choose its own address"


async def test_one_proxy_rightmost_entry_is_the_client(backend: Backend) -> None:
    proxy = "10.0.0.254"
    statuses = await _statuses(
        backend,
        1,
        [
            (proxy, "6.6.6.6, 1.1.1.1"),
            (proxy, "7.7.7.7, 1.1.1.1"),  # spoofed left part changes nothing
            (proxy, "1.1.1.1, 2.2.2.2"),  # a different client
        ],
    )
    assert statuses == [200, 429, 200]


async def test_two_proxies_skip_the_inner_proxy_entry(backend: Backend) -> None:
    inner = "10.0.0.254"
    statuses = await _statuses(
        backend,
        2,
        [
            (inner, "6.6.6.6, 1.1.1.1, 10.0.0.253"),
            (inner, "1.1.1.1, 10.0.0.253"),
            (inner, "2.2.2.2, 10.0.0.253"),
        ],
    )
    assert statuses == [200, 429, 200]


async def test_ipv6_clients_share_a_budget_per_64(backend: Backend) -> None:
    statuses = await _statuses(
        backend,
        0,
        [("2001:db8:1:2::1", None), ("2001:db8:1:2:ffff::9", None), ("2001:db8:1:3::1", None)],
    )
    assert statuses == [200, 429, 200]


@pytest.mark.parametrize(
    ("peer_address", "forwarded", "proxies", "expected"),
    [
        ("203.0.113.5", "1.1.1.1", 0, "203.0.113.5"),
        ("10.0.0.254", "9.9.9.9,  1.1.1.1 ", 1, "1.1.1.1"),
        ("10.0.0.254", "1.1.1.1", 2, "1.1.1.1"),
        ("10.0.0.254", None, 1, "10.0.0.254"),
        (None, None, 0, "unknown"),
    ],
)
def test_client_address(
    peer_address: str | None, forwarded: str | None, proxies: int, expected: str
) -> None:
    assert client_address(peer_address, forwarded, proxies) == expected


@pytest.mark.parametrize(
    ("address", "prefix", "expected"),
    [
        ("192.0.2.1", 64, "192.0.2.1"),
        ("2001:db8::1", 64, "2001:db8::/64"),
        ("[2001:db8::abcd:1]", 64, "2001:db8::/64"),
        ("2001:db8::1", 128, "2001:db8::1"),
        ("2001:db8:0:0:1::1", 48, "2001:db8::/48"),
        ("::ffff:192.0.2.1", 64, "192.0.2.1"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("not-an-ip", 64, "not-an-ip"),
    ],
)
def test_normalize_address(address: str, prefix: int, expected: str) -> None:
    assert normalize_address(address, prefix) == expected
