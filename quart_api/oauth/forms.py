"""The consent page's defences against cross-site form posts (CSRF).

Two independent checks on every POST:

- The browser's own word: ``Sec-Fetch-Site`` must be ``same-origin`` and ``Origin``
  must be this service's origin, when the browser sends them (all current ones do
  on a form POST). A page on another site cannot forge either.
- A form token: an HMAC, under a key derived from ``SECRET_KEY``, of the form's
  purpose, what it is bound to, the exact authorization request (query string)
  and the time it was made. The consent form is bound to the session (the
  quart-auth cookie's user id and session version, so logout kills it); the
  log-in form, shown before there is a session, to a random cookie of its own.
  A token is good for :data:`FORM_LIFETIME` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Final

from quart import Response, current_app, request
from werkzeug.exceptions import Forbidden

from quart_api.oauth.urls import own_origin
from quart_api.settings import Settings

__all__ = [
    "FORM_COOKIE",
    "FORM_LIFETIME",
    "check_form_token",
    "form_cookie_value",
    "form_token",
    "refuse_cross_site",
    "set_form_cookie",
]

#: Seconds a rendered form may be submitted in.
FORM_LIFETIME: Final = 15 * 60
#: The random value the log-in form's token is bound to (there is no session yet).
FORM_COOKIE: Final = "oauth_form"


def refuse_cross_site() -> None:
    """403 unless the browser says the POST comes from this origin (when it says)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        raise Forbidden(f"The form was posted from another site (Sec-Fetch-Site: {site}).")
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != own_origin():
        raise Forbidden("The form was posted from another origin.")


def _key() -> bytes:
    secret = str(current_app.secret_key or "")
    return hashlib.sha256(b"quart-api oauth forms\x00" + secret.encode("utf-8")).digest()


def _mac(purpose: str, binding: str, issued: int) -> str:
    message = b"\x00".join(
        (purpose.encode(), binding.encode(), request.query_string, str(issued).encode())
    )
    digest = hmac.new(_key(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def form_token(purpose: str, binding: str) -> str:
    """A token for a form of ``purpose`` bound to ``binding`` and this request's query."""
    issued = int(time.time())
    return f"{issued}.{_mac(purpose, binding, issued)}"


def check_form_token(token: str | None, purpose: str, binding: str) -> None:
    """403 unless ``token`` was made by :func:`form_token` for the same purpose,
    binding and query, less than :data:`FORM_LIFETIME` seconds ago."""
    issued_text, _, mac = (token or "").partition(".")
    try:
        issued = int(issued_text)
    except ValueError:
        issued = 0
    fresh = 0 <= time.time() - issued <= FORM_LIFETIME
    if not (mac and fresh and hmac.compare_digest(mac, _mac(purpose, binding, issued))):
        raise Forbidden(
            "The form is missing its token, is too old, or was not made for you: "
            "reload the page and try again."
        )


def form_cookie_value() -> str | None:
    """The log-in form's cookie, when the browser sent one."""
    value = request.cookies.get(FORM_COOKIE)
    return value if value and len(value) <= 100 else None


def set_form_cookie(response: Response, value: str | None = None) -> str:
    """Give the browser the log-in form's cookie (HttpOnly, SameSite=Strict, /oauth)."""
    value = value or secrets.token_urlsafe(32)
    settings: Settings = current_app.extensions["settings"]
    response.set_cookie(
        FORM_COOKIE,
        value,
        path="/oauth",
        secure=settings.production,
        httponly=True,
        samesite="Strict",
    )
    return value
