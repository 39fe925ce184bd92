"""The authorization server's own URLs: from ``PUBLIC_URL`` when set, never then from
the ``Host`` header (a forged one must not change the issuer or a form's origin);
from the request when unset (development, or one host behind no proxy)."""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import current_app, request

from quart_api.settings import Settings

__all__ = ["absolute_url", "issuer", "own_origin"]


def _base() -> str:
    settings: Settings = current_app.extensions["settings"]
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return request.host_url.rstrip("/")


def issuer() -> str:
    """The issuer identifier (RFC 8414 2): the service's public base URL."""
    return _base()


def absolute_url(path: str) -> str:
    """``path`` (starting with ``/``) as an absolute URL of this service."""
    return _base() + path


def own_origin() -> str:
    """``scheme://host[:port]`` of this service, as a browser sends it in ``Origin``."""
    parts = urlsplit(_base())
    return f"{parts.scheme}://{parts.netloc}".lower()
