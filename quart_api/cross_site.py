"""Cross-site request detection for cookie sessions (as Go 1.25's ``CrossOriginProtection``).

A browser attaches the session cookie to requests another site makes it send; the
service refuses such a request when it is unsafe (not GET, HEAD or OPTIONS):

- ``Sec-Fetch-Site`` (every current browser sends it) other than ``same-origin`` or
  ``none`` (typed by the user) is cross-site, ``same-site`` included: a sibling
  subdomain is another origin.
- Without it, an ``Origin`` that is not this service's own origin is cross-site:
  ``PUBLIC_URL`` when set (scheme, host and port), else the ``Host`` header (host and
  port). Hosts compare case-insensitively and a missing port means the scheme's
  default (``https://x`` is ``x:443``); anything else differs, a trailing dot
  included (browsers treat ``x.`` as another site), and an ``Origin`` that is not
  a URL (``null``, from sandboxed frames and some redirects) is cross-site.
- Neither header: not a browser's cross-site request (browsers send ``Origin`` on
  every cross-origin unsafe request), so it passes.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from werkzeug.datastructures import Headers

__all__ = ["SAFE_METHODS", "HostPort", "Origin", "is_cross_site", "parse_origin"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Origin(NamedTuple):
    """A parsed origin: lower-case scheme and host, the port filled with the default."""

    scheme: str
    host: str
    port: int


class HostPort(NamedTuple):
    """A parsed ``Host`` header: a lower-case host, the port ``None`` when absent."""

    host: str
    port: int | None


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` as an :class:`Origin` (default port filled), or ``None``."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if parts.path or parts.query or parts.fragment:
        return None  # an Origin header never has them
    return Origin(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])


def _parse_host(text: str) -> HostPort | None:
    """A ``Host`` header (``host[:port]``, ``[v6]:port``); the port stays unknown if absent."""
    if not text or any(c in text for c in "/?#@\\ "):
        return None
    try:
        parts = urlsplit("//" + text.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return HostPort(parts.hostname, port)


def _same_origin(origin: Origin, own: Origin | HostPort) -> bool:
    if isinstance(own, Origin):
        return origin == own
    # A Host header has no scheme; a missing port is the Origin scheme's default.
    default = _DEFAULT_PORTS[origin.scheme]
    return origin.host == own.host and origin.port == (default if own.port is None else own.port)


def is_cross_site(method: str, headers: Headers, public_origin: Origin | None) -> bool:
    """True when an unsafe request was sent by another site's page.

    Args:
        method: the request's method; safe methods are never cross-site here.
        headers: the request's headers.
        public_origin: the service's own origin (from ``PUBLIC_URL``), or ``None``
            to compare with the request's ``Host`` header.
    """
    if method in SAFE_METHODS:
        return False
    fetch_sites = headers.getlist("Sec-Fetch-Site")
    if fetch_sites:
        return any(site.strip() not in _SAME for site in fetch_sites)
    origins = headers.getlist("Origin")
    if not origins:
        return False
    own: Origin | HostPort | None = public_origin
    if own is None:
        own = _parse_host(headers.get("Host", ""))
    if own is None:
        return True
    for value in origins:
        origin = parse_origin(value)
        if origin is None or not _same_origin(origin, own):
            return True
    return False
