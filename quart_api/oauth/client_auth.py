"""Client authentication at the token and revocation endpoints (RFC 6749 2.3, 3.2.1).

A confidential client sends its secret either by HTTP Basic (``client_secret_basic``)
or in the form (``client_secret_post``), whichever it registered, never both; a
public client (``none``) sends only its ``client_id``. Secrets are compared as
hashes in constant time, and an unknown client costs the same hash as a known one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from urllib.parse import unquote_plus

from quart import request
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.datastructures import MultiDict

from quart_api.models import OAuthClient, hash_secret
from quart_api.oauth.errors import OAuthError
from quart_api.oauth.params import single

__all__ = ["authenticate_client"]

#: Compared against when the client is unknown, so the answer takes as long.
_NO_SECRET = "0" * 64


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError(
            "invalid_client",
            "Authenticate the client with HTTP Basic (client_secret_basic), "
            "client_secret in the form (client_secret_post), or only client_id (public).",
            status=401,
            basic_challenge=True,
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise OAuthError(
            "invalid_client",
            "The Basic credentials must be base64(client_id:client_secret).",
            status=401,
            basic_challenge=True,
        )
    # RFC 6749 2.3.1: both halves are application/x-www-form-urlencoded first.
    return unquote_plus(client_id), unquote_plus(secret)


async def authenticate_client(session: AsyncSession, form: MultiDict[str, str]) -> OAuthClient:
    """The client the request authenticates as; raises ``invalid_client`` (401) otherwise."""
    header = request.headers.get("Authorization")
    form_id = single(form, "client_id")
    form_secret = single(form, "client_secret")
    basic = header is not None
    if header is not None:
        client_id, secret = _basic_credentials(header)
        if form_secret is not None:
            raise OAuthError(
                "invalid_request",
                "Use one client authentication method, not Basic and a form secret.",
            )
        if form_id is not None and form_id != client_id:
            raise OAuthError("invalid_request", "client_id differs from the Basic credentials.")
        method: str = "client_secret_basic"
        given_secret: str | None = secret
    elif form_secret is not None:
        if form_id is None:
            raise OAuthError("invalid_request", "client_secret needs client_id beside it.")
        client_id, method, given_secret = form_id, "client_secret_post", form_secret
    else:
        if form_id is None:
            raise OAuthError(
                "invalid_client",
                "Name the client: client_id (and its secret, if it has one).",
                status=401,
            )
        client_id, method, given_secret = form_id, "none", None

    client = await _load(session, client_id)
    stored = client.secret_hash if client is not None and client.secret_hash else _NO_SECRET
    secret_ok = given_secret is not None and hmac.compare_digest(hash_secret(given_secret), stored)
    if client is None:
        raise OAuthError("invalid_client", "Unknown client.", status=401, basic_challenge=basic)
    if client.token_endpoint_auth_method != method:
        raise OAuthError(
            "invalid_client",
            f"This client authenticates with {client.token_endpoint_auth_method}, not {method}.",
            status=401,
            basic_challenge=basic or not client.is_public,
        )
    if method != "none" and not secret_ok:
        raise OAuthError(
            "invalid_client", "Wrong client secret.", status=401, basic_challenge=basic
        )
    return client


async def _load(session: AsyncSession, client_id: str) -> OAuthClient | None:
    try:
        key = uuid.UUID(client_id)
    except ValueError:
        return None
    return await session.get(OAuthClient, key)
