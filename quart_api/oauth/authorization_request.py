"""The authorization request (RFC 6749 4.1.1 + RFC 7636 4.3), parsed and checked.

Two kinds of refusal, as RFC 6749 4.1.2.1 orders them:

- :class:`UntrustedRequest`: the client is unknown or the redirect URI is not
  one it registered. The user is told on an error page and never redirected
  (sending them to an unverified URI would make this server an open redirector).
- :class:`AuthorizationError`: anything else, once the redirect URI is trusted;
  the user agent is sent back to the client with ``error`` (and ``state``, ``iss``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from quart import request
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.datastructures import MultiDict

from quart_api.models import OAuthClient
from quart_api.oauth.errors import OAuthError
from quart_api.oauth.params import MAX_PARAMETER_LENGTH, repeated_parameter, single
from quart_api.oauth.pkce import CHALLENGE_PATTERN
from quart_api.oauth.redirect_uris import redirect_uri_matches
from quart_api.oauth.scopes import ScopeError, parse_scope
from quart_api.oauth.urls import issuer

__all__ = [
    "MAX_STATE_LENGTH",
    "AuthorizationError",
    "AuthorizationRequest",
    "UntrustedRequest",
    "parse_authorization_request",
    "redirect_target",
]

MAX_STATE_LENGTH = 1000


class UntrustedRequest(Exception):
    """No trustworthy client or redirect URI: an error page, never a redirect."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class AuthorizationError(OAuthError):
    """An error sent back to the client's (verified) redirect URI."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(error, description)
        self.redirect_uri = redirect_uri
        self.state = state

    def location(self) -> str:
        return redirect_target(
            self.redirect_uri,
            {"error": self.error, "error_description": self.description},
            self.state,
        )


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request: who asks, for what, and where the answer goes."""

    client: OAuthClient
    redirect_uri: str
    redirect_uri_given: bool
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str

    def error(self, error: str, description: str) -> AuthorizationError:
        return AuthorizationError(error, description, self.redirect_uri, self.state)


def redirect_target(redirect_uri: str, params: dict[str, str], state: str | None) -> str:
    """``redirect_uri`` with ``params``, ``state`` and ``iss`` added to its query (which
    is kept, RFC 6749 3.1.2)."""
    values = dict(params)
    if state is not None:
        values["state"] = state
    values["iss"] = issuer()  # RFC 9207: the client checks who answered
    parts = urlsplit(redirect_uri)
    query = urlencode(values)
    if parts.query:
        query = parts.query + "&" + query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


async def _trusted_client(session: AsyncSession, args: MultiDict[str, str]) -> OAuthClient:
    values = args.getlist("client_id")
    if len(values) != 1 or not values[0]:
        raise UntrustedRequest(
            "The request must name the app once: client_id is missing or repeated."
        )
    try:
        client_id = uuid.UUID(values[0])
    except ValueError:
        client_id = None
    client = None if client_id is None else await session.get(OAuthClient, client_id)
    if client is None:
        raise UntrustedRequest("No app is registered under this client_id.")
    return client


def _trusted_redirect(client: OAuthClient, args: MultiDict[str, str]) -> tuple[str, bool]:
    values = args.getlist("redirect_uri")
    if len(values) > 1:
        raise UntrustedRequest("redirect_uri is repeated.")
    if not values or not values[0]:
        if len(client.redirect_uris) == 1:
            return client.redirect_uris[0], False
        raise UntrustedRequest(
            "redirect_uri is required: this app registered more than one redirect URI."
        )
    given = values[0]
    if len(given) > MAX_PARAMETER_LENGTH or not redirect_uri_matches(client.redirect_uris, given):
        raise UntrustedRequest(
            "redirect_uri is not one this app registered; you were not sent there."
        )
    return given, True


async def parse_authorization_request(session: AsyncSession) -> AuthorizationRequest:
    """Check the request's query as RFC 6749 4.1.1 and RFC 7636 4.3 (S256 only) ask."""
    args = request.args
    client = await _trusted_client(session, args)
    redirect_uri, given = _trusted_redirect(client, args)
    states = args.getlist("state")
    state = states[0] if len(states) == 1 and len(states[0]) <= MAX_STATE_LENGTH else None

    def refuse(error: str, description: str) -> AuthorizationError:
        return AuthorizationError(error, description, redirect_uri, state or None)

    repeated = repeated_parameter(args)
    if repeated is not None:
        raise refuse("invalid_request", f"{repeated} is repeated (RFC 6749 3.1).")
    try:
        response_type = single(args, "response_type")
        challenge = single(args, "code_challenge")
        method = single(args, "code_challenge_method")
        scope = single(args, "scope")
    except OAuthError as error:
        raise refuse(error.error, error.description) from None
    if states and len(states[0]) > MAX_STATE_LENGTH:
        raise refuse("invalid_request", f"state is longer than {MAX_STATE_LENGTH} characters.")
    if response_type is None:
        raise refuse("invalid_request", "response_type is required (code).")
    if response_type != "code":
        raise refuse(
            "unsupported_response_type",
            "Only the authorization code flow (response_type=code) is supported.",
        )
    if challenge is None:
        raise refuse("invalid_request", "code_challenge is required: use PKCE with S256.")
    if method != "S256":
        raise refuse(
            "invalid_request",
            "code_challenge_method must be S256; plain (the default) is not supported.",
        )
    if CHALLENGE_PATTERN.match(challenge) is None:
        raise refuse(
            "invalid_request", "code_challenge must be BASE64URL(SHA256(verifier)), 43 characters."
        )
    try:
        scopes = parse_scope(scope, tuple(client.scopes)) if scope is not None else None
    except ScopeError as error:
        raise refuse("invalid_scope", str(error).capitalize() + ".") from None
    if scopes is None:
        scopes = tuple(sorted(client.scopes))
    if not scopes:
        raise refuse("invalid_scope", "No scope was requested, and the app has none by default.")
    return AuthorizationRequest(client, redirect_uri, given, scopes, state or None, challenge)
