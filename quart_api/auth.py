"""Who is calling: session cookies (quart-auth) and bearer API tokens, and scopes.

One :func:`current_principal` for both ways in; the guards' user loader uses
it too, so per-user limits and per-user cache entries key on the same identity.

- A cookie session carries ``"<user id>.<session version>"``, signed by
  quart-auth. Logout and password changes bump the user's session version, so
  a copied cookie dies server-side even though its signature is still valid.
- A bearer token is an opaque random secret shown once; the database holds only
  its SHA-256, looked up by one indexed equality (the comparison happens inside
  the index, so no secret-dependent timing leaks from Python). ``last_used_at``
  is written at most once a minute per token, not on every request.
- ``requires_scopes`` plugs into the guards' pre-check hook, so it runs before
  a cache hit is served, whatever the decorator order.
- A cookie session does not authenticate an unsafe request another site's page
  sent (``quart_api.cross_site``): 403, before any view runs. Bearer tokens are
  never sent by a browser on its own, so they are not checked.
- Every response to a request that carries credentials is ``Cache-Control:
  private, no-cache`` (with ``Vary: Authorization, Cookie``), cache hits included;
  one that sets or deletes the cookie is ``no-store``. A view that reveals a secret
  sets ``no-store`` itself, which is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Final, Literal, TypeVar

from quart import Quart, Request, Response, current_app, g, has_request_context, request, websocket
from quart_auth import AuthUser, QuartAuth, current_user, login_user, logout_user
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import joinedload
from werkzeug.exceptions import Forbidden, Unauthorized

from quart_api.cross_site import is_cross_site, parse_origin
from quart_api.db import Database, DatabaseUnavailable, get_database, get_session
from quart_api.guards import Guards, precheck
from quart_api.models import ApiToken, User, hash_secret, utcnow
from quart_api.settings import Settings

__all__ = [
    "KNOWN_SCOPES",
    "Principal",
    "ResponseStep",
    "current_principal",
    "forget_principals",
    "init_auth",
    "log_in",
    "log_out",
    "oauth",
    "require_principal",
    "requires_scopes",
]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Every scope a token may carry. A cookie session carries all of them.
KNOWN_SCOPES: tuple[str, ...] = ("users:read", "users:write", "tokens:write")
#: ``last_used_at`` is refreshed at most this often per token.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_G_KEY = "_quart_api_principal"
#: What `g` holds under `_G_KEY` before the request's caller is resolved.
_UNRESOLVED: Final[Any] = object()
#: What a response to a caller with credentials says to caches: browsers may keep
#: it but must revalidate (ETag, 304), shared caches must not keep it at all.
PRIVATE = "private, no-cache"
NO_STORE = "no-store"
_PUBLIC_ORIGIN = "public_origin"
#: Request headers (lower-cased) that make a response one built for a caller.
_CREDENTIALS: Final = frozenset({"authorization", "cookie"})
_header_name = itemgetter(0)

#: One step of finishing a response, awaited by the app's after-request hook.
ResponseStep = Callable[[Response], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: who, with which scopes, and how they came in.

    Plain values, not an ORM object, so a principal can be cached across
    requests; :meth:`load_user` fetches the account in the request's session
    when a view needs to read or change it.
    """

    user_id: uuid.UUID
    is_admin: bool
    scopes: frozenset[str]
    via: Literal["cookie", "token"]
    token_id: uuid.UUID | None = None
    expires_at: datetime | None = None
    #: ``user_id`` as text, what per-user limits and cache entries key on: formatted
    #: once per cached principal, not on every request (``str(UUID)`` is not free)
    user_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_key", str(self.user_id))

    def may_act_on(self, user_id: uuid.UUID) -> bool:
        """Self, or an admin."""
        return self.user_id == user_id or self.is_admin

    async def load_user(self) -> User:
        """The caller's account in the request's session (401 if it was deleted meanwhile)."""
        user = await get_session().get(User, self.user_id)
        if user is None:
            raise BearerChallenge("This account no longer exists.", "invalid_token")
        return user


class _PrincipalCache:
    """Recently resolved principals, so a cache hit costs no database round trip.

    Entries live ``ttl`` seconds. This process forgets a user's or token's
    entries the moment it changes them (logout, password, revoke, delete);
    other workers see such a change within ``ttl``.
    """

    __slots__ = ("_entries", "_max_entries", "inflight", "ttl")

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        #: lookups in progress: when an entry expires under load, one request per
        #: token reads the database and the others wait for its answer.
        self.inflight: dict[str, asyncio.Future[Principal | None]] = {}
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self._max_entries:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, principal)

    def forget(self, user_id: uuid.UUID) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[1].user_id != user_id}


def forget_principals(user_id: uuid.UUID) -> None:
    """Drop this process's cached principals of ``user_id`` (after changing its access)."""
    cache: _PrincipalCache = current_app.extensions["principal_cache"]
    cache.forget(user_id)
    current = getattr(g, _G_KEY, None)
    if current is not None and current.user_id == user_id:
        delattr(g, _G_KEY)


class BearerChallenge(Unauthorized):
    """401 with ``WWW-Authenticate: Bearer`` (and an RFC 6750 error when a token was bad)."""

    def __init__(self, description: str, error: str | None = None) -> None:
        super().__init__(description)
        self.error = error

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        challenge = 'Bearer realm="api"'
        if self.error:
            challenge += f', error="{self.error}"'
        return [("Content-Type", "application/problem+json"), ("WWW-Authenticate", challenge)]


class CrossSiteRequest(Forbidden):
    """403: an unsafe request with the session cookie, sent by another site's page."""

    def __init__(self) -> None:
        super().__init__(
            "Cross-site requests may not use the session cookie: send the request from "
            "this site's own pages, or authenticate with a bearer token."
        )


class InsufficientScope(Forbidden):
    """403 with ``WWW-Authenticate: Bearer error="insufficient_scope"`` naming the scopes."""

    def __init__(self, needed: tuple[str, ...]) -> None:
        super().__init__(f"This action needs the scope(s): {' '.join(needed)}.")
        self.needed = needed

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        scope = " ".join(self.needed)
        challenge = f'Bearer realm="api", error="insufficient_scope", scope="{scope}"'
        return [
            ("Content-Type", "application/problem+json"),
            ("WWW-Authenticate", challenge),
        ]


def init_auth(app: Quart, settings: Settings, guards: Guards) -> ResponseStep:
    """quart-auth for cookies (strict in production), the guards' user loader, and the
    caching headers of responses to callers with credentials.

    Returns auth's part of finishing every response (quart-auth's cookie, then the
    caching headers): the app's one after-request hook awaits it. No hook is
    registered here, because Quart wraps every hook in ``ensure_async`` on every request.
    """
    app.extensions[_PUBLIC_ORIGIN] = (
        None if settings.public_url is None else parse_origin(settings.public_url)
    )
    app.config.update(
        QUART_AUTH_COOKIE_SECURE=settings.production,
        QUART_AUTH_COOKIE_HTTP_ONLY=True,
        QUART_AUTH_COOKIE_SAMESITE="Strict" if settings.production else "Lax",
        QUART_AUTH_DURATION=14 * 24 * 3600,
        QUART_AUTH_SALT="quart-api session",
    )
    quart_auth = _QuartAuth(app)
    app.extensions["principal_cache"] = _PrincipalCache(settings.auth_cache_seconds)

    @guards.user_loader
    async def principal_user_id() -> str | None:
        principal = await current_principal()
        return None if principal is None else principal.user_key

    return quart_auth.finish_response


class _QuartAuth(QuartAuth):
    """quart-auth reading its cookie without raising and catching a KeyError per request,
    and writing it from :meth:`finish_response` instead of a hook of its own."""

    def init_app(self, app: Quart) -> None:
        super().init_app(app)
        app.after_request_funcs[None].remove(self.after_request)

    async def finish_response(self, response: Response) -> Response:
        """quart-auth's cookie, then the caching headers, which depend on the cookie."""
        # The cookie changes only after login_user/logout_user/renew_login, which all
        # store the user on `g` first; a request that never did has nothing to write.
        if self.attribute_name in g._get_current_object():
            response = await self.after_request(response)
        _cache_control(response)
        return response

    def load_cookie(self) -> str | None:
        conn = request if has_request_context() else websocket
        token = conn.cookies.get(str(self.cookie_name))
        return None if token is None else self.load_token(token)


def _header_names(headers: Iterable[tuple[str, str]]) -> set[str]:
    """The lower-cased names of ``headers``, in one pass that raises nothing.

    werkzeug's ``in``, ``get`` and ``setdefault`` raise and catch a ``KeyError`` for
    every missing header.
    """
    return set(map(str.lower, map(_header_name, headers)))


def _cache_control(response: Response) -> None:
    """``private`` for a response built for a caller, ``no-store`` when it sets the cookie."""
    headers = response.headers
    names = _header_names(headers)
    if "set-cookie" in names:
        headers["Cache-Control"] = NO_STORE
        return
    current: Request = request._get_current_object()  # type: ignore[attr-defined]
    if _CREDENTIALS.isdisjoint(_header_names(current.headers)):
        return
    if "cache-control" not in names:
        headers.add("Cache-Control", PRIVATE)
    headers.add("Vary", "Authorization, Cookie")


def _cookie_id(user: User) -> str:
    return f"{user.id}.{user.session_version or 0}"


def _cookie_principal(user: User) -> Principal:
    return Principal(user.id, user.is_admin, frozenset(KNOWN_SCOPES), "cookie")


def log_in(user: User) -> None:
    """Start a cookie session for ``user`` (the cookie is written with the response)."""
    login_user(AuthUser(_cookie_id(user)))
    setattr(g, _G_KEY, _cookie_principal(user))


def log_out() -> None:
    """Delete the session cookie (callers bump the session version to end it server-side)."""
    logout_user()
    setattr(g, _G_KEY, None)


async def current_principal() -> Principal | None:
    """The caller, resolved once per request; raises 401 for a bad bearer token."""
    context = g._get_current_object()
    principal: Principal | None = context.get(_G_KEY, _UNRESOLVED)
    if principal is _UNRESOLVED:
        principal = await _resolve()
        setattr(context, _G_KEY, principal)
    return principal


async def require_principal() -> Principal:
    """The caller, or 401 with a ``WWW-Authenticate: Bearer`` challenge."""
    principal = await current_principal()
    if principal is None:
        raise BearerChallenge("Authentication is required: log in or send a bearer token.")
    return principal


async def _resolve() -> Principal | None:
    current: Request = request._get_current_object()  # type: ignore[attr-defined]
    authorization = current.headers.getlist("Authorization")  # `get` raises when missing
    if authorization:
        scheme, _, credentials = authorization[0].partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise BearerChallenge(
                "The Authorization header must be 'Bearer <token>'.", "invalid_request"
            )
        return await _from_token(credentials.strip())
    auth_id = current_user.auth_id
    if auth_id is None:
        return None
    principal = await _from_cookie(auth_id)
    if principal is not None and is_cross_site(
        current.method, current.headers, current_app.extensions[_PUBLIC_ORIGIN]
    ):
        raise CrossSiteRequest()
    return principal


def _invalid_token() -> BearerChallenge:
    return BearerChallenge("The bearer token is unknown, expired or revoked.", "invalid_token")


async def _from_token(secret: str) -> Principal:
    key = "t:" + hash_secret(secret)
    cache: _PrincipalCache = current_app.extensions["principal_cache"]
    cached = cache.get(key)
    if cached is not None:
        if cached.expires_at is not None and cached.expires_at <= utcnow():
            raise _invalid_token()
        return cached
    pending = cache.inflight.get(key)
    if pending is not None:
        shared = await asyncio.shield(pending)
        if shared is not None:
            return shared
        return await _load_token(key, cache)  # the first lookup was abandoned
    future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
    cache.inflight[key] = future
    try:
        principal = await _load_token(key, cache)
    except Exception as error:
        future.set_exception(error)
        future.exception()  # retrieved here: waiting requests re-raise it, or none waits
        raise
    except BaseException:
        future.set_result(None)
        raise
    finally:
        cache.inflight.pop(key, None)
    future.set_result(principal)
    return principal


async def _load_token(key: str, cache: _PrincipalCache) -> Principal:
    session = get_session()
    async with get_database().deadline():
        token = (
            await session.execute(
                select(ApiToken)
                .options(joinedload(ApiToken.user))
                .where(ApiToken.token_hash == key[2:])
            )
        ).scalar_one_or_none()
        now = utcnow()
        if token is None or not token.is_active(now):
            raise _invalid_token()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
            # After the response, on its own connection: the request never waits for it.
            database = current_app.extensions["database"]
            current_app.add_background_task(_touch, database, token.id, now)
    principal = Principal(
        token.user_id,
        token.user.is_admin,
        frozenset(token.scopes),
        "token",
        token.id,
        token.expires_at,
    )
    cache.put(key, principal)
    return principal


async def _touch(database: Database, token_id: uuid.UUID, now: datetime) -> None:
    """Record use at most once per ``LAST_USED_RESOLUTION``; concurrent requests race harmlessly.

    Best effort: a busy or unavailable database loses one timestamp, logged as one line.
    """
    try:
        await _write_last_used(database, token_id, now)
    except (DatabaseUnavailable, SQLAlchemyError) as error:
        log.warning("could not record a token's last use: %s", error)


async def _write_last_used(database: Database, token_id: uuid.UUID, now: datetime) -> None:
    async with database.deadline(), database.sessionmaker() as session, session.begin():
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id)
            .where(
                or_(
                    ApiToken.last_used_at.is_(None),
                    ApiToken.last_used_at <= now - LAST_USED_RESOLUTION,
                )
            )
            # Use is not a modification: keep `modified_at` (its onupdate would bump it).
            .values(last_used_at=now, modified_at=ApiToken.modified_at)
        )


async def _from_cookie(auth_id: str) -> Principal | None:
    user_part, _, version = auth_id.partition(".")
    try:
        user_id = uuid.UUID(user_part)
        session_version = int(version)
    except ValueError:
        return None
    key = "c:" + auth_id
    cache: _PrincipalCache = current_app.extensions["principal_cache"]
    cached = cache.get(key)
    if cached is not None:
        return cached
    async with get_database().deadline():
        user = await get_session().get(User, user_id)
    if user is None or (user.session_version or 0) != session_version:
        return None  # a logged-out, changed-password or deleted account's old cookie
    principal = _cookie_principal(user)
    cache.put(key, principal)
    return principal


def requires_scopes(*scopes: str) -> Callable[[F], F]:
    """Refuse callers without every one of ``scopes``: 401 anonymous, 403 missing scope.

    A marker on the view, run by the guards before any cache hit is served.
    """
    unknown = set(scopes) - set(KNOWN_SCOPES)
    if unknown:
        raise ValueError(
            f"requires_scopes: unknown scope(s) {sorted(unknown)}; known: {list(KNOWN_SCOPES)}."
        )
    needed = tuple(scopes)

    async def check_scopes() -> None:
        principal = await require_principal()
        if not set(needed) <= principal.scopes:
            raise InsufficientScope(needed)

    return precheck(check_scopes)


def oauth(*, required_scopes: Iterable[str] = ()) -> Callable[[F], F]:
    """The original series' spelling, ``@oauth(required_scopes=[...])``, of :func:`requires_scopes`.

    The same check, with the same guarantees (401 anonymous, 403 with
    ``insufficient_scope``, run before any cache hit): an OAuth access token passes
    it with the scopes its user granted, like any other bearer token.
    """
    if isinstance(required_scopes, str):
        raise TypeError("oauth(required_scopes=...) takes a list of scopes, not a string.")
    return requires_scopes(*required_scopes)
