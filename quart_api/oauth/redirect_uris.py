"""Redirect URIs: what a client may register, and exact matching (RFC 9700 2.1, RFC 8252).

A registered URI is absolute, has no fragment (RFC 6749 3.1.2) and no user
information, and is ``https``, or ``http`` on a loopback IP literal
(``127.0.0.1``, ``[::1]``) for apps on the user's own machine (RFC 8252 7.3;
``localhost`` is refused, as 8.3 advises: a name can resolve elsewhere).

Matching is exact string comparison. The one exception is RFC 8252's: a native
app listens on a port it is given at run time, so for a registered ``http``
loopback URI the port in the request may differ; everything else must be equal.
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import SplitResult, urlsplit

from quart_api.models.oauth import MAX_REDIRECT_URI_LENGTH

__all__ = ["redirect_uri_matches", "redirect_uri_problem"]

_FORBIDDEN_CHARACTERS: Final = frozenset(' \t\r\n"<>\\^`{|}')


def _split(uri: str) -> SplitResult | None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return None
    return parts


def _is_loopback_ip(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be registered as a redirect URI, or None when it can."""
    if len(uri) > MAX_REDIRECT_URI_LENGTH:
        return f"must be at most {MAX_REDIRECT_URI_LENGTH} characters"
    if not uri.isascii() or any(c in _FORBIDDEN_CHARACTERS or ord(c) < 0x20 for c in uri):
        return "must be an absolute URI without spaces or control characters"
    parts = _split(uri)
    if parts is None or not parts.scheme or not parts.netloc or not parts.hostname:
        return "must be an absolute URI with a host"
    if "#" in uri:
        return "must not contain a fragment (RFC 6749 3.1.2)"
    if "@" in parts.netloc:
        return "must not contain user information"
    scheme = parts.scheme.lower()
    if scheme == "https":
        return None
    if scheme == "http":
        if _is_loopback_ip(parts.hostname):
            return None
        return (
            "must use https; http is allowed only on a loopback address "
            "(http://127.0.0.1 or http://[::1], RFC 8252)"
        )
    return "must use https (or http on a loopback address)"


def redirect_uri_matches(registered: list[str], given: str) -> bool:
    """Whether ``given`` is one of the ``registered`` URIs (exact, loopback port aside)."""
    if given in registered:
        return True
    if "#" in given:
        return False
    parts = _split(given)
    if parts is None or parts.scheme != "http" or not _is_loopback_ip(parts.hostname):
        return False
    if "@" in parts.netloc:
        return False
    return any(_same_but_port(parts, candidate) for candidate in registered)


def _same_but_port(given: SplitResult, registered: str) -> bool:
    candidate = _split(registered)
    if candidate is None or candidate.scheme != "http" or not _is_loopback_ip(candidate.hostname):
        return False
    return (
        _host_part(given) == _host_part(candidate)
        and given.path == candidate.path
        and given.query == candidate.query
    )


def _host_part(parts: SplitResult) -> str:
    """The netloc without its port, exactly as written (``127.0.0.1``, ``[::1]``)."""
    netloc = parts.netloc
    if netloc.startswith("["):
        return netloc[: netloc.index("]") + 1]
    return netloc.rsplit(":", 1)[0] if ":" in netloc else netloc
