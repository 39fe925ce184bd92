"""The parts of client identity: picking the hop, parsing it, typing keys."""

from __future__ import annotations

import ipaddress

import pytest

from quart_api.guards._identity import address_key, parse_address, pick_hop, typed_key


@pytest.mark.parametrize(
    ("lines", "proxies", "expected"),
    [
        (["1.1.1.1"], 0, None),
        (["9.9.9.9,  1.1.1.1 "], 1, "1.1.1.1"),
        (["9.9.9.9", "1.1.1.1"], 1, "1.1.1.1"),
        (["9.9.9.9", "1.1.1.1, 2.2.2.2"], 2, "1.1.1.1"),
        (["1.1.1.1,,\t2.2.2.2,"], 1, "2.2.2.2"),
        (["1.1.1.1"], 2, "1.1.1.1"),  # fewer hops: the leftmost was a proxy's
        (["unknown"], 1, "unknown"),  # parsed (and refused) later
        ([], 1, None),
        ([" , ,"], 1, None),
    ],
)
def test_pick_hop(lines: list[str], proxies: int, expected: str | None) -> None:
    assert pick_hop(lines, proxies) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1:8080\t", "192.0.2.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8:0000::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]:80", "fe80::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:", None),
        ("192.0.2.1:http", None),
        ("192.0.2.1:\uff18\uff10", None),  # full-width digits
        ("[2001:db8::1]x", None),
        ("[2001:db8::1", None),
        ("01.2.3.4", None),
        ("\uff11.2.3.4", None),
        ("unknown", None),
        ("", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


@pytest.mark.parametrize(
    ("address", "prefix", "expected"),
    [
        ("192.0.2.1", 64, "i:192.0.2.1"),
        ("2001:db8::1", 64, "i:2001:db8::/64"),
        ("2001:db8::abcd:1", 64, "i:2001:db8::/64"),
        ("2001:db8::1", 128, "i:2001:db8::1"),
        ("2001:db8:0:0:1::1", 48, "i:2001:db8::/48"),
        (None, 64, "i:unknown"),
    ],
)
def test_address_key(address: str | None, prefix: int, expected: str) -> None:
    ip = None if address is None else ipaddress.ip_address(address)
    assert address_key(ip, prefix) == expected


def test_typed_keys_never_collide_and_never_leave_their_hash_tag() -> None:
    texts = [
        "alice",
        "u:alice",
        "i:1.2.3.4",
        "1.2.3.4",
        "a}b{c",
        "*?[]\\",
        "é",
        "\udcff",
        "x" * 500,
    ]
    keys = {typed_key(kind, text) for kind in "uk" for text in texts}
    assert len(keys) == 2 * len(texts)
    for key in keys:
        assert key[:2] in {"u:", "k:", "u#", "k#"}, key
        assert key.isascii(), key
        assert len(key) <= 100, key
        assert not set(key) & set("{}*?[]\\ "), key


def test_forged_long_hops_are_refused_before_the_parse_cache() -> None:
    """Each distinct forged hop would otherwise stay in the parse cache: 65,536 hops of
    a header's size are a gigabyte held by one worker."""
    from quart_api.guards._identity import _parse_address

    _parse_address.cache_clear()
    for n in range(50):
        assert parse_address(f"{n:0>200}") is None
    assert parse_address("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%eth0]:65535") is not None
    assert _parse_address.cache_info().currsize == 1
