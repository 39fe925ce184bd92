"""The authorization endpoint's HTML: rendering, and the headers every page carries.

Every response of the authorization endpoint, pages and redirects alike, is
``Cache-Control: no-store`` (it carries a form token, or a code in its
``Location``), may not be framed (``frame-ancestors 'none'`` and
``X-Frame-Options: DENY`` against clickjacking the Allow button), sends no
``Referer`` to other origins, and runs no script: its Content-Security-Policy
allows only its own nonce'd stylesheet, and forms that post to this origin (plus, on the
consent page, the app's redirect origin, which Chromium checks on the redirect
that follows the post).
"""

from __future__ import annotations

import secrets
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import urlsplit

from quart import Response, g, render_template

__all__ = ["PAGE_HEADERS", "page_security_headers", "render_error", "render_page"]

PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": with it, browsers send "Origin: null" on the form's own POST.
    "Referrer-Policy": "same-origin",
}
_G_CSP = "_oauth_csp"


def _csp(nonce: str | None, form_targets: tuple[str, ...]) -> str:
    style = f"'nonce-{nonce}'" if nonce else "'none'"
    forms = " ".join(("'self'", *form_targets))
    return (
        f"default-src 'none'; style-src {style}; form-action {forms}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


async def render_page(
    template: str, status: int = 200, *, form_target: str | None = None, **context: Any
) -> Response:
    """Render ``oauth/<template>`` with a fresh style nonce and the page headers.

    ``form_target``: a URI the page's form may end up at after a redirect (its
    origin joins the CSP's ``form-action``).
    """
    nonce = secrets.token_urlsafe(16)
    targets = (_origin(form_target),) if form_target else ()
    setattr(g, _G_CSP, _csp(nonce, targets))
    body = await render_template(f"oauth/{template}", csp_nonce=nonce, **context)
    return Response(body, status=status, content_type="text/html; charset=utf-8")


async def render_error(status: int, message: str, title: str | None = None) -> Response:
    """An error page: the user is told what went wrong and is never redirected."""
    phrase = title or HTTPStatus(status).phrase
    return await render_page("error.html", status, title=phrase, message=message)


def page_security_headers(response: Response) -> Response:
    """``after_request`` of the authorization endpoint's blueprint."""
    response.headers.update(PAGE_HEADERS)
    response.headers["Content-Security-Policy"] = g.get(_G_CSP) or _csp(None, ())
    return response
