"""Client identity: X-Forwarded-For only through trusted proxies; IPv6 grouped by network.

Every X-Forwarded-For line counts, in order, as one list; ports are stripped; a hop
that is not an address never becomes a key; keys of different kinds never collide.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from quart import request
from werkzeug.datastructures import Headers

from quart_api.guards import rate_limited
from tests.guards.conftest import Backend, make_app, peer, serving

#: What one request sends: its socket peer and its X-Forwarded-For lines, in order.
Sent = tuple[str, str | list[str] | None]


def _forwarded(lines: str | list[str] | None) -> Headers:
    headers = Headers()
    for line in [lines] if isinstance(lines, str) else lines or []:
        headers.add("X-Forwarded-For", line)
    return headers


async def _statuses(
    backend: Backend, proxies: int, requests: list[Sent], **options: Any
) -> list[int]:
    """Status of each ``(peer, X-Forwarded-For lines)`` request against a 1-a-minute limit."""
    app, _ = make_app(backend, trusted_proxy_count=proxies, **options)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    statuses = []
    async with serving(app) as client:
        for address, lines in requests:
            response = await client.get("/things", headers=_forwarded(lines), **peer(address))
            statuses.append(response.status_code)
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


PROXY = "10.0.0.254"


async def test_forged_first_xff_line_does_not_get_a_fresh_budget(backend: Backend) -> None:
    """HAProxy's ``option forwardfor`` adds its own line after the client's forged one."""
    statuses = await _statuses(
        backend, 1, [(PROXY, [f"6.6.6.{n}", "203.0.113.9"]) for n in range(4)]
    )
    assert statuses == [200, 429, 429, 429]


async def test_the_client_is_counted_from_the_right_across_lines(backend: Backend) -> None:
    statuses = await _statuses(
        backend,
        2,
        [
            (PROXY, ["6.6.6.1, 203.0.113.9", "10.0.0.253"]),
            (PROXY, ["203.0.113.9", "6.6.6.2", "203.0.113.9, 10.0.0.253"]),
            (PROXY, ["203.0.113.10,10.0.0.253"]),
        ],
    )
    assert statuses == [200, 429, 200]


@pytest.mark.parametrize(
    "variants",
    [
        ["203.0.113.9:1111", "203.0.113.9", "203.0.113.9:2222", " 203.0.113.9 "],
        ["[2001:db8::4]:443", "2001:db8::4", "[2001:DB8:0:0:0:0:0:4]", "2001:db8::4%eth0"],
        ["::ffff:203.0.113.9", "[::ffff:cb00:7109]:80", "203.0.113.9"],
    ],
    ids=["ipv4-ports", "ipv6-ports-case-zeros-zone", "ipv4-mapped"],
)
async def test_spellings_of_one_address_share_one_budget(
    backend: Backend, variants: list[str]
) -> None:
    # Per address, not per /64: the IPv6 spellings must be the same address.
    statuses = await _statuses(backend, 1, [(PROXY, v) for v in variants], ipv6_prefix=128)
    assert statuses == [200] + [429] * (len(variants) - 1)


async def test_empty_hops_and_whitespace_are_ignored_not_believed(backend: Backend) -> None:
    statuses = await _statuses(
        backend,
        1,
        [(PROXY, "203.0.113.9"), (PROXY, "6.6.6.6,, 203.0.113.9 ,"), (PROXY, ["", "203.0.113.9"])],
    )
    assert statuses == [200, 429, 429]


@pytest.mark.parametrize(
    "hop", ["unknown", "u:alice", "k:key", "_hidden", "203.0.113.9 6.6.6.6", "1.2.3.4.5", "*"]
)
async def test_a_hop_that_is_not_an_address_counts_as_the_socket_peer(
    backend: Backend, hop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "quart_api.guards")
    statuses = await _statuses(
        backend,
        1,
        [(PROXY, f"{hop}{n}" if hop != "*" else hop) for n in range(3)] + [(PROXY, None)],
    )
    assert statuses == [200, 429, 429, 429], "all four are the proxy's peer address"
    warnings = [r for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warnings) == 1, "one warning: the proxy set-up looks wrong"


async def test_forged_user_shaped_hop_cannot_spend_a_users_budget(backend: Backend) -> None:
    app, _ = make_app(backend, trusted_proxy_count=1)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        for n in range(3):
            await client.get(
                "/things", headers={"X-Forwarded-For": "u:alice"}, **peer(f"10.0.0.{n}")
            )
        alice = await client.get(
            "/things", headers={"X-User": "alice", "X-Forwarded-For": "203.0.113.9"}, **peer(PROXY)
        )
    assert alice.status_code == 200, "an anonymous client spent alice's budget"


async def test_a_custom_key_cannot_spend_an_address_or_a_users_budget(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/by-key")
    @rate_limited(limit=1, minutes=1, key=lambda: request.headers.get("X-Key"), scope="shared")
    async def by_key() -> str:
        return "ok"

    @app.get("/by-client")
    @rate_limited(limit=1, minutes=1, scope="shared")
    async def by_client() -> str:
        return "ok"

    async with serving(app) as client:
        for forged in ("203.0.113.9", "u:alice", "i:203.0.113.9", "u%3Aalice"):
            await client.get("/by-key", headers={"X-Key": forged}, **peer("10.0.0.1"))
        anonymous = await client.get("/by-client", **peer("203.0.113.9"))
        alice = await client.get("/by-client", headers={"X-User": "alice"}, **peer("10.0.0.2"))
    assert anonymous.status_code == 200
    assert alice.status_code == 200


async def test_unban_of_an_address_leaves_a_user_whose_id_names_it(backend: Backend) -> None:
    """User ids are escaped: ``}{i:...`` inside one cannot break out of its hash tag."""
    app, guards = make_app(backend)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1, ip=False)
    async def things() -> str:
        return "ok"

    evil = {"X-User": "x}{203.0.113.9}{i:203.0.113.9}*"}
    async with serving(app) as client:
        await client.get("/things", headers=evil)
        await guards.unban("203.0.113.9", app)
        again = await client.get("/things", headers=evil)
    assert again.status_code == 429


@pytest.mark.parametrize("pattern", ["*", "?", "[1]*", "1.2.3.4*", "u:alice", ""])
async def test_unban_refuses_what_is_not_an_address(backend: Backend, pattern: str) -> None:
    app, guards = make_app(backend)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        await client.get("/things", **peer("203.0.113.9"))
        with pytest.raises(ValueError, match="not an IP address"):
            await guards.unban(pattern, app)
        still = await client.get("/things", **peer("203.0.113.9"))
    assert still.status_code == 429, "nothing was deleted"


async def test_unban_accepts_any_spelling_of_the_address(backend: Backend) -> None:
    app, guards = make_app(backend)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        await client.get("/things", **peer("2001:db8::4"))
        cleared = await guards.unban("[2001:DB8::4]:443", app)
        again = await client.get("/things", **peer("2001:db8::4"))
    assert cleared >= 1
    assert again.status_code == 200
