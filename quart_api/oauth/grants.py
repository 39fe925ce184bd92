"""The authorization server's state changes: codes, token sets, rotation, revocation.

Every function takes the request's session and commits what it decided, so a
refusal that must still change something (revoking a grant whose code or refresh
token was replayed) is written, and any other refusal writes nothing.

Locking: a grant's row is locked before anything else of the grant is changed
(the code's conditional UPDATE, ``SELECT ... FOR UPDATE`` before a refresh,
the revoking UPDATE), so these operations serialize per grant and cannot
deadlock each other. SQLite takes its one write lock at BEGIN (``db.py``).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quart_api.auth import forget_principals
from quart_api.models import (
    ApiToken,
    OAuthClient,
    OAuthGrant,
    OAuthRefreshToken,
    hash_secret,
    utcnow,
)
from quart_api.oauth.errors import OAuthError
from quart_api.oauth.pkce import verifier_matches
from quart_api.oauth.scopes import format_scope

__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "CODE_LIFETIME",
    "REFRESH_TOKEN_LIFETIME",
    "CodeRequest",
    "issue_code",
    "redeem_code",
    "refresh",
    "revoke_access_token",
    "revoke_grant",
]

log = logging.getLogger(__name__)

#: An authorization code is redeemable this long after consent (RFC 6749 4.1.2: short).
CODE_LIFETIME: Final = timedelta(seconds=60)
#: An access token lives this long; the app refreshes it.
ACCESS_TOKEN_LIFETIME: Final = timedelta(hours=1)
#: A refresh token is good this long, and for one use; each use gives a new one.
REFRESH_TOKEN_LIFETIME: Final = timedelta(days=30)


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class CodeRequest:
    """A consented authorization request, ready to become a code."""

    user_id: uuid.UUID
    client: OAuthClient
    scopes: tuple[str, ...]
    redirect_uri: str
    redirect_uri_given: bool
    code_challenge: str


async def issue_code(session: AsyncSession, consented: CodeRequest) -> str:
    """Record the grant with its code and return the code (shown only now).

    The user's abandoned authorizations (codes expired unredeemed) are deleted on
    the way, so pending rows do not pile up.
    """
    now = utcnow()
    await session.execute(
        delete(OAuthGrant).where(
            OAuthGrant.user_id == consented.user_id,
            OAuthGrant.code_used_at.is_(None),
            OAuthGrant.code_expires_at < now,
        )
    )
    code = _new_secret()
    session.add(
        OAuthGrant(
            user_id=consented.user_id,
            client_id=consented.client.id,
            scopes=list(consented.scopes),
            redirect_uri=consented.redirect_uri,
            redirect_uri_given=consented.redirect_uri_given,
            code_hash=hash_secret(code),
            code_challenge=consented.code_challenge,
            code_expires_at=now + CODE_LIFETIME,
        )
    )
    await session.commit()
    return code


async def redeem_code(
    session: AsyncSession,
    client: OAuthClient,
    code: str,
    verifier: str,
    redirect_uri: str | None,
) -> dict[str, Any]:
    """Exchange an authorization code for a token set (RFC 6749 4.1.3, RFC 7636 4.6).

    Checked before the code is spent, so a request that cannot prove it holds the
    code (another client, a wrong redirect URI or PKCE verifier) cannot burn it:
    the code must be unused and unexpired, issued to ``client`` for this redirect
    URI, and ``verifier`` must hash to its challenge. A code presented after it was
    redeemed is a replay: the grant and every token it issued are revoked.
    """
    grant = (
        await session.execute(select(OAuthGrant).where(OAuthGrant.code_hash == hash_secret(code)))
    ).scalar_one_or_none()
    if grant is None or grant.revoked_at is not None:
        raise OAuthError("invalid_grant", "The authorization code is unknown or revoked.")
    if grant.code_used_at is not None:
        await _revoke_replayed(session, grant)
        raise OAuthError(
            "invalid_grant",
            "The authorization code was already used; what it issued is now revoked.",
        )
    now = utcnow()
    if grant.client_id != client.id:
        raise OAuthError("invalid_grant", "The authorization code was issued to another client.")
    if grant.code_expires_at <= now:
        raise OAuthError("invalid_grant", "The authorization code has expired.")
    if redirect_uri is None:
        if grant.redirect_uri_given:
            raise OAuthError(
                "invalid_request",
                "redirect_uri is required: the authorization request included it.",
            )
    elif redirect_uri != grant.redirect_uri:
        raise OAuthError(
            "invalid_grant", "redirect_uri differs from the one of the authorization request."
        )
    if not verifier_matches(verifier, grant.code_challenge):
        raise OAuthError("invalid_grant", "The PKCE code_verifier does not match the challenge.")
    spent = await session.execute(
        update(OAuthGrant)
        .where(OAuthGrant.id == grant.id, OAuthGrant.code_used_at.is_(None))
        .values(code_used_at=now, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        # A concurrent redemption won the conditional UPDATE (it waited on our lock,
        # or we on its): this request is the replay.
        await _revoke_replayed(session, grant)
        raise OAuthError(
            "invalid_grant",
            "The authorization code was already used; what it issued is now revoked.",
        )
    body = _issue_token_set(session, grant, client, tuple(grant.scopes), now)
    await session.commit()
    return body


async def refresh(
    session: AsyncSession,
    client: OAuthClient,
    refresh_token: str,
    requested: tuple[str, ...] | None,
) -> dict[str, Any]:
    """Rotate a refresh token (RFC 6749 6, RFC 9700 4.14.2).

    The token is spent and a new one issued with the access token; presenting a
    spent one again is taken as theft, and the whole grant is revoked. ``requested``
    may narrow the access token's scopes, never widen them past the grant (nor past
    what the client may still have).
    """
    token = (
        await session.execute(
            select(OAuthRefreshToken).where(
                OAuthRefreshToken.token_hash == hash_secret(refresh_token)
            )
        )
    ).scalar_one_or_none()
    if token is None:
        raise OAuthError("invalid_grant", "The refresh token is unknown.")
    grant = (
        await session.execute(
            select(OAuthGrant)
            .where(OAuthGrant.id == token.grant_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    await session.refresh(token)  # read again under the grant's lock
    if grant.client_id != client.id:
        raise OAuthError("invalid_grant", "The refresh token was issued to another client.")
    if grant.revoked_at is not None:
        raise OAuthError("invalid_grant", "The authorization was revoked.")
    if token.used_at is not None:
        await _revoke(session, grant)
        await session.commit()
        forget_principals(grant.user_id)
        raise OAuthError(
            "invalid_grant",
            "The refresh token was already used; the authorization is now revoked.",
        )
    now = utcnow()
    if token.expires_at <= now:
        raise OAuthError("invalid_grant", "The refresh token has expired.")
    allowed = set(grant.scopes) & set(client.scopes)
    if requested is None:
        scopes = tuple(sorted(allowed))
    else:
        beyond = sorted(set(requested) - set(grant.scopes))
        if beyond:
            raise OAuthError(
                "invalid_scope",
                f"The scope(s) {' '.join(beyond)} were not granted by the user.",
            )
        scopes = tuple(sorted(set(requested) & allowed))
    if not scopes:
        raise OAuthError("invalid_scope", "None of the requested scopes is still granted.")
    token.used_at = now
    grant.last_used_at = now
    # What this grant no longer needs: expired access tokens, spent expired refresh tokens.
    await session.execute(
        delete(ApiToken).where(ApiToken.grant_id == grant.id, ApiToken.expires_at < now)
    )
    await session.execute(
        delete(OAuthRefreshToken).where(
            OAuthRefreshToken.grant_id == grant.id,
            OAuthRefreshToken.expires_at < now,
        )
    )
    body = _issue_token_set(session, grant, client, scopes, now)
    await session.commit()
    return body


def _issue_token_set(
    session: AsyncSession,
    grant: OAuthGrant,
    client: OAuthClient,
    scopes: tuple[str, ...],
    now: datetime,
) -> dict[str, Any]:
    """Add an access token (an ``api_tokens`` row) and a refresh token; the response body."""
    access_secret = _new_secret()
    refresh_secret = _new_secret()
    session.add(
        ApiToken(
            user_id=grant.user_id,
            name=client.client_name,
            scopes=list(scopes),
            token_hash=hash_secret(access_secret),
            expires_at=now + ACCESS_TOKEN_LIFETIME,
            grant_id=grant.id,
        )
    )
    session.add(
        OAuthRefreshToken(
            grant_id=grant.id,
            token_hash=hash_secret(refresh_secret),
            expires_at=now + REFRESH_TOKEN_LIFETIME,
        )
    )
    return {
        "access_token": access_secret,
        "token_type": "Bearer",
        "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
        "refresh_token": refresh_secret,
        "scope": format_scope(scopes),
    }


async def _revoke(session: AsyncSession, grant: OAuthGrant) -> None:
    """Revoke ``grant`` and its access tokens (its refresh tokens die with it)."""
    now = utcnow()
    await session.execute(
        update(OAuthGrant)
        .where(OAuthGrant.id == grant.id, OAuthGrant.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(ApiToken)
        .where(ApiToken.grant_id == grant.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


async def _revoke_replayed(session: AsyncSession, grant: OAuthGrant) -> None:
    log.warning("authorization code replayed for grant %s: revoking it and its tokens", grant.id)
    await _revoke(session, grant)
    await session.commit()
    forget_principals(grant.user_id)


async def revoke_grant(session: AsyncSession, grant: OAuthGrant) -> None:
    """Revoke ``grant`` for good: its tokens stop working at once in this worker."""
    await _revoke(session, grant)
    await session.commit()
    forget_principals(grant.user_id)


async def revoke_access_token(session: AsyncSession, token: ApiToken) -> None:
    """Revoke one access token (RFC 7009); the grant and its refresh token stay."""
    await session.execute(
        update(ApiToken)
        .where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    forget_principals(token.user_id)
