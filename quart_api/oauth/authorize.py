"""``/oauth/authorize``: the log-in form, the consent page, and the redirect back.

- ``GET /oauth/authorize?<RFC 6749 4.1.1 + PKCE>``: checks the request, then shows
  the log-in form (no session) or the consent page (the app's name, each scope in
  words, Allow and Deny).
- ``POST /oauth/authorize/login``: the log-in form; on success the consent page
  (200, so the success clears failed logins as the API's login does). Same guards as
  ``POST /api/v1/auth/login``, sharing its budgets: ``LOGIN_RATE_LIMIT`` per IP,
  and ``PROTECT_LIMIT`` failed passwords before the IP is locked out (429).
- ``POST /oauth/authorize``: the consent. Allow issues a code and sends the user
  back (303) with ``code``, ``state`` and ``iss`` (RFC 9207); Deny with
  ``error=access_denied``.

Every POST passes :func:`~quart_api.oauth.forms.refuse_cross_site` and a form
token; every response carries the headers of :mod:`~quart_api.oauth.pages`.
"""

from __future__ import annotations

import secrets

from quart import Blueprint, Response, request
from quart_auth import current_user
from quart_schema import hide
from sqlalchemy import select
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException

from quart_api.auth import Principal, current_principal, log_in, require_principal
from quart_api.db import DatabaseUnavailable, get_database, get_session
from quart_api.guards import protected, rate_limited
from quart_api.models import User
from quart_api.models.user import normalize_username
from quart_api.oauth.authorization_request import (
    AuthorizationError,
    AuthorizationRequest,
    UntrustedRequest,
    parse_authorization_request,
    redirect_target,
)
from quart_api.oauth.forms import (
    check_form_token,
    form_cookie_value,
    form_token,
    refuse_cross_site,
    set_form_cookie,
)
from quart_api.oauth.grants import CodeRequest, issue_code
from quart_api.oauth.pages import page_security_headers, render_error, render_page
from quart_api.oauth.params import repeated_parameter
from quart_api.oauth.scopes import SCOPE_DESCRIPTIONS
from quart_api.passwords import averify_password, dummy_hash

__all__ = ["blueprint"]

blueprint = Blueprint("oauth_authorize", __name__, template_folder="templates")
blueprint.after_request(page_security_headers)

_LOGIN = "login"
_CONSENT = "consent"
#: Headers of a refusal worth keeping on its HTML page.
_KEPT_HEADERS = frozenset({"retry-after", "ratelimit", "ratelimit-policy", "www-authenticate"})


def _redirect(location: str, status: int) -> Response:
    return Response("", status=status, headers={"Location": location})


def _action(path: str) -> str:
    """``path`` with this request's query string: forms post the request they were made for."""
    query = request.query_string.decode("ascii", "replace")
    return f"{path}?{query}" if query else path


async def _cookie_principal() -> Principal | None:
    principal = await current_principal()
    if principal is not None and principal.via != "cookie":
        raise Forbidden(
            "Apps are authorized in the browser, signed in with your password, "
            "not with an API token."
        )
    return principal


async def _form() -> MultiDict[str, str]:
    if request.mimetype != "application/x-www-form-urlencoded":
        raise BadRequest("The form must be sent as application/x-www-form-urlencoded.")
    form = await request.form
    repeated = repeated_parameter(form)
    if repeated is not None:
        raise BadRequest(f"{repeated} of the form is repeated.")
    return form


async def _form_account() -> str | None:
    """The account the log-in form names, normalized as lookups are (the guards' key).

    The same key as ``/api/v1/auth/login`` and the same ``login`` scope, so failed logins
    on the form and on the API share one count per account and per client. A form the
    view will refuse names no account and counts for its IP only.
    """
    if request.mimetype != "application/x-www-form-urlencoded":
        return None
    username = (await request.form).get("username")
    if not username or len(username) > 64:
        return None
    return normalize_username(username)


async def _login_page(
    authorization: AuthorizationRequest,
    status: int = 200,
    error: str | None = None,
    username: str = "",
) -> Response:
    cookie = form_cookie_value()
    binding = cookie or secrets.token_urlsafe(32)
    response = await render_page(
        "login.html",
        status,
        client_name=authorization.client.client_name,
        action=_action("/oauth/authorize/login"),
        csrf_token=form_token(_LOGIN, binding),
        error=error,
        username=username,
    )
    if cookie is None:
        set_form_cookie(response, binding)
    return response


async def _consent_page(authorization: AuthorizationRequest, principal: Principal) -> Response:
    session = get_session()
    user = await principal.load_user()
    owner = (
        await session.execute(select(User.username).where(User.id == authorization.client.user_id))
    ).scalar_one()
    return await render_page(
        "consent.html",
        form_target=authorization.redirect_uri,
        client_name=authorization.client.client_name,
        owner=owner,
        username=user.username,
        is_admin=user.is_admin,
        scopes=[(scope, SCOPE_DESCRIPTIONS[scope]) for scope in authorization.scopes],
        redirect_uri=authorization.redirect_uri,
        action=_action("/oauth/authorize"),
        csrf_token=form_token(_CONSENT, _session_binding()),
    )


def _session_binding() -> str:
    """What the consent form is bound to: the session cookie's user id and version."""
    return str(current_user.auth_id or "")


@blueprint.get("/oauth/authorize")
@hide  # an HTML page, described in the README
@rate_limited(config="API_RATE_LIMIT")
async def authorize() -> Response:
    """Show the log-in form or the consent page for a valid authorization request."""
    async with get_database().deadline():
        authorization = await parse_authorization_request(get_session())
        principal = await _cookie_principal()
        if principal is None:
            return await _login_page(authorization)
        return await _consent_page(authorization, principal)


@blueprint.post("/oauth/authorize/login")
@hide  # an HTML page, described in the README
@rate_limited(config="LOGIN_RATE_LIMIT", user=False, scope="login")
@protected(
    config="PROTECT_LIMIT",
    statuses={401},
    block_status=429,
    reset_on_success=True,
    key=_form_account,
    block_detail="Too many failed logins.",
    scope="login",
)
async def log_in_to_authorize() -> Response:
    """Check the password; on success start a session and show the consent page."""
    refuse_cross_site()
    form = await _form()
    cookie = form_cookie_value()
    if cookie is None:
        raise Forbidden("Your browser did not keep this page's cookie: allow cookies and reload.")
    check_form_token(form.get("csrf_token"), _LOGIN, cookie)
    username = form.get("username", "")
    password = form.get("password", "")
    if not username or not password or len(username) > 64 or len(password) > 1024:
        raise BadRequest("Enter your username and password.")
    session = get_session()
    async with get_database().deadline():
        authorization = await parse_authorization_request(session)
        user = await User.by_username(session, username)
        # Ends the (read-only) transaction, keeping what was read (no expiry on commit):
        # no transaction stays open while the password is hashed.
        await session.commit()
    stored = user.password_hash if user is not None and user.password_hash else dummy_hash()
    valid = await averify_password(stored, password)
    if user is None or user.password_hash is None or not valid:
        return await _login_page(
            authorization, 401, error="Wrong username or password.", username=username
        )
    log_in(user)
    # The consent page right away, as a 2xx: a success clears this client's failed
    # logins (reset_on_success) as it does at /api/v1/auth/login.
    async with get_database().deadline():
        return await _consent_page(authorization, await require_principal())


@blueprint.post("/oauth/authorize")
@hide  # an HTML page, described in the README
@rate_limited(config="API_RATE_LIMIT")
async def decide() -> Response:
    """Allow (a code, 303 to the app) or Deny (``access_denied``, 303 to the app)."""
    refuse_cross_site()
    form = await _form()
    session = get_session()
    async with get_database().deadline():
        authorization = await parse_authorization_request(session)
        principal = await _cookie_principal()
        if principal is None:  # the session ended while the page was open
            return await _login_page(authorization)
        check_form_token(form.get("csrf_token"), _CONSENT, _session_binding())
        decision = form.get("decision")
        if decision == "deny":
            raise authorization.error("access_denied", "The user denied the request.")
        if decision != "allow":
            raise BadRequest("The decision must be allow or deny.")
        beyond = sorted(set(authorization.scopes) - principal.scopes)
        if beyond:
            raise authorization.error(
                "invalid_scope", f"The user does not hold the scope(s) {' '.join(beyond)}."
            )
        code = await issue_code(
            session,
            CodeRequest(
                user_id=principal.user_id,
                client=authorization.client,
                scopes=authorization.scopes,
                redirect_uri=authorization.redirect_uri,
                redirect_uri_given=authorization.redirect_uri_given,
                code_challenge=authorization.code_challenge,
            ),
        )
    location = redirect_target(authorization.redirect_uri, {"code": code}, authorization.state)
    return _redirect(location, 303)


@blueprint.errorhandler(AuthorizationError)
async def _redirect_error(error: AuthorizationError) -> Response:
    # 303 after a POST, so the browser follows with a GET and never re-posts the form.
    return _redirect(error.location(), 302 if request.method == "GET" else 303)


@blueprint.errorhandler(UntrustedRequest)
async def _untrusted(error: UntrustedRequest) -> Response:
    return await render_error(400, error.description, "This authorization request is invalid")


@blueprint.errorhandler(HTTPException)
async def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    message = error.description if status != 500 else "The server failed to answer."
    response = await render_error(status, message or "The request failed.")
    for name, value in error.get_headers():
        if name.lower() in _KEPT_HEADERS:
            response.headers[name] = value
    return response


@blueprint.errorhandler(DatabaseUnavailable)
async def _database_unavailable(error: DatabaseUnavailable) -> Response:
    response = await render_error(503, "The service is busy; try again in a moment.")
    response.headers["Retry-After"] = "1"
    return response
