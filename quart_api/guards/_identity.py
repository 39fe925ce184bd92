"""Who the client is, for limits and bans.

The client IP is the socket peer unless ``trusted_proxy_count`` proxies sit
in front, in which case it is the entry that many hops from the right of
``X-Forwarded-For`` (each trusted proxy appends the address it saw). Entries
further left were written by the client and are never believed, so a client
cannot choose its own address. IPv6 clients are grouped by prefix (/64 by
default): one host usually owns a whole /64 and could otherwise rotate through
it to get a fresh budget per request.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

__all__ = ["client_address", "normalize_address"]


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxy_count: int) -> str:
    """The address the limits key on (already normalized)."""
    address = peer or ""
    if trusted_proxy_count and forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if len(hops) >= trusted_proxy_count:
            address = hops[-trusted_proxy_count]
        elif hops:
            # Fewer hops than proxies: the leftmost one was still added by a proxy.
            address = hops[0]
    return address or "unknown"


@lru_cache(maxsize=65536)
def normalize_address(address: str, ipv6_prefix: int) -> str:
    """Canonical text of an IPv4 address, or the /``ipv6_prefix`` network of an IPv6 one.

    Unparseable values (a proxy that sends ``unknown``) are kept as given, so
    they share one budget rather than getting a fresh one each.
    """
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ipv6_prefix < 128:
            network = ipaddress.IPv6Network((int(ip), ipv6_prefix), strict=False)
            return f"{network.network_address}/{ipv6_prefix}"
    return str(ip)
