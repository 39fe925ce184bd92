"""Who the client is, for limits and bans, and how identities become store keys.

The client is the socket peer unless ``trusted_proxy_count`` proxies sit in front.
Then every ``X-Forwarded-For`` line is read, in order, as one comma-separated list
(RFC 9110 5.3: several lines of a list header are one list), and the client is the
hop that many from the right: each trusted proxy appends the address it saw, so
hops further left were written by the client and are never believed. A proxy that
adds a line of its own (HAProxy ``option forwardfor``) instead of extending the
client's line therefore changes nothing.

A hop is parsed into an address before it is used: ports, brackets, surrounding
whitespace and IPv6 zone ids are stripped, IPv4-mapped IPv6 is unwrapped, so every
spelling of one address is one client. A hop that is not an address (``unknown``, a
forged ``u:alice``) is never a key: the caller uses the socket peer instead and warns
that the proxy set-up looks wrong.

Keys are typed: ``i:`` an address (IPv6 grouped by network, /64 by default, since one
host usually owns a whole /64 and could rotate through it), ``u:`` a user id, ``k:`` a
custom key. User ids and custom keys are percent-encoded, so no text a client or a
loader chooses can spell another kind of key, a ``{hash tag}`` brace or a glob
character; long ones are hashed (``u#``, ``k#``) to keep keys short.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import quote

__all__ = [
    "IPAddress",
    "address_key",
    "embedded_ipv4",
    "identify",
    "parse_address",
    "pick_hop",
    "typed_key",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: NAT64's well-known prefix (RFC 6052): an IPv4 client behind a translator, in IPv6.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

#: Longer than any spelling of an address (bracketed IPv6 with an IPv4 tail, a zone id
#: and a port): longer text is refused before the cache, so forged hops cannot fill it.
_MAX_ADDRESS_TEXT = 100
#: Escaped identities longer than this are hashed instead (keys stay short).
_MAX_ESCAPED = 96
_ASCII_DIGITS = frozenset("0123456789")


def pick_hop(forwarded_for: Sequence[str], trusted_proxy_count: int) -> str | None:
    """The text of the hop that names the client (not yet parsed); None without one.

    ``forwarded_for`` are the request's ``X-Forwarded-For`` lines in order. Empty
    list elements are ignored (RFC 9110 5.6.1). With fewer hops than proxies the
    leftmost hop is still one a proxy wrote. None (no proxies, no hop): the socket
    peer is the client.
    """
    if not trusted_proxy_count or not forwarded_for:
        return None
    joined = forwarded_for[0] if len(forwarded_for) == 1 else ",".join(forwarded_for)
    hops = [hop for part in joined.split(",") if (hop := part.strip(" \t"))]
    if not hops:
        return None
    return hops[-min(trusted_proxy_count, len(hops))]


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an address, or None when it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:443``, a zone id (``fe80::1%eth0``, dropped: it means nothing off
    its host) and surrounding spaces or tabs. IPv4-mapped IPv6 becomes the IPv4
    address. Ports must be ASCII digits; anything else is not an address.
    """
    if len(text) > _MAX_ADDRESS_TEXT:
        return None
    return _parse_address(text)


@lru_cache(maxsize=65536)
def _parse_address(text: str) -> IPAddress | None:
    text = text.strip(" \t")
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and _is_port(rest[1:]))):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    if ":" in text:
        text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def identify(text: str, ipv6_prefix: int) -> tuple[IPAddress | None, str]:
    """The address ``text`` spells (None: not one) and its key (:func:`address_key`).

    Remembered by the text: a client's address comes back with each of its requests,
    and hashing the text is cheaper than hashing an address object.
    """
    if len(text) > _MAX_ADDRESS_TEXT:
        return None, address_key(None, ipv6_prefix)
    return _identify(text, ipv6_prefix)


@lru_cache(maxsize=65536)
def _identify(text: str, ipv6_prefix: int) -> tuple[IPAddress | None, str]:
    ip = _parse_address(text)
    return ip, address_key(ip, ipv6_prefix)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 host an IPv6 address stands for, when it is built from one; else None.

    6to4 (``2002:cb00:7109::/48`` is the network of ``203.0.113.9``), Teredo (its
    client's public address) and NAT64's well-known prefix (``64:ff9b::cb00:7109``).
    Only the owner of that IPv4 address can complete a handshake from such an
    address, so a refusal of the IPv4 host may follow it there; a privilege must not
    (the safelist matches the address itself only).
    """
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and set(text) <= _ASCII_DIGITS


@lru_cache(maxsize=65536)
def address_key(ip: IPAddress | None, ipv6_prefix: int) -> str:
    """The typed key of a client address: ``i:1.2.3.4``, ``i:2001:db8::/64``.

    ``None`` (a peer that is not an address, such as a Unix socket) is ``i:unknown``,
    which no address can spell.
    """
    if ip is None:
        return "i:unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ipv6_prefix < 128:
        network = ipaddress.IPv6Network((int(ip), ipv6_prefix), strict=False)
        return f"i:{network.network_address}/{ipv6_prefix}"
    return f"i:{ip}"


def typed_key(kind: str, text: str) -> str:
    """The key of a user id (``kind`` "u") or custom key ("k"): escaped, never ambiguous.

    Percent-encoding leaves only ``[A-Za-z0-9_.~-]`` and ``%XX``: no brace, colon,
    space or glob character, so the key can neither leave its hash tag nor match
    another kind's pattern. Longer than :data:`_MAX_ESCAPED`: ``<kind>#<hash>``, never
    cached, so client-chosen long identities cannot fill the cache.
    """
    if len(text) > _MAX_ESCAPED:
        return _hashed_key(kind, text)
    return _escaped_key(kind, text)


@lru_cache(maxsize=65536)
def _escaped_key(kind: str, text: str) -> str:
    escaped = quote(text, safe="", errors="surrogatepass")
    if len(escaped) <= _MAX_ESCAPED:
        return f"{kind}:{escaped}"
    return _hashed_key(kind, text)


def _hashed_key(kind: str, text: str) -> str:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()
    return f"{kind}#{digest}"
