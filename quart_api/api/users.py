"""``/api/v1/users``: sign-up, list, read, update, password, delete, create-or-update.

Every route is rate limited (``API_RATE_LIMIT``), sign-up also per IP by
``SIGNUP_RATE_LIMIT``; reads are cached per user and every write invalidates the
``users`` cache namespace, so a change is visible at once. A caller sees a user's
e-mail and admin flag only on their own account or as an admin; fields a caller
may not see are left out.

Routes that hash a password do it between database phases (``phased_api_view``):
no transaction is open and no deadline runs while the hash waits for its slot.
One's own password changes only through ``POST /users/current/password``, which
asks for the old one: a stolen session or token is not enough to take the account.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from quart import Blueprint, current_app, url_for
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Conflict, Forbidden, HTTPException, NotFound

from quart_api.api.common import (
    api_view,
    database_phase,
    json_body,
    page_envelope,
    pagination,
    parse_uuid,
    phased_api_view,
    require_fields,
)
from quart_api.api.openapi import documented
from quart_api.api.schemas import (
    NoContent,
    PageQuery,
    PasswordChangeRequest,
    UserCreateRequest,
    UserEnvelope,
    UserPage,
    UserUpdateRequest,
)
from quart_api.auth import (
    Principal,
    current_principal,
    forget_principals,
    log_in,
    require_principal,
    requires_scopes,
)
from quart_api.db import current_session, get_database, get_session
from quart_api.guards import Guards, cached, protected, rate_limited
from quart_api.models import OAuthClient, OAuthGrant, User, ValidationError
from quart_api.models.reads import RowQuery
from quart_api.passwords import ahash_password, averify_password

__all__ = ["USERS_NAMESPACE", "blueprint", "user_body", "users_page"]

blueprint = Blueprint("users", __name__, url_prefix="/api/v1/users")

#: Cache namespace of every cached users read; writes bump its generation.
USERS_NAMESPACE = "users"
_CURRENT = "current"
#: What the account's owner and admins see beyond a user's default fields.
_PRIVILEGED_FIELDS = ("email", "is_admin")

# Reads select columns, not objects: rows serialized by the same field plans as
# `User.to_dict` (`row_serializer`), one statement per read.
_READ_COLUMNS = User.shown_columns(show=_PRIVILEGED_FIELDS)
_ID = _READ_COLUMNS.index("id")
_public_row = User.row_serializer(_READ_COLUMNS)
_privileged_row = User.row_serializer(_READ_COLUMNS, show=_PRIVILEGED_FIELDS)
_public_rows = User.rows_serializer(_READ_COLUMNS)
_privileged_rows = User.rows_serializer(_READ_COLUMNS, show=_PRIVILEGED_FIELDS)
_users = User.__table__
#: A page in the list's stable order, each row also carrying the total count: one
#: statement while the page is within range (past the end no row carries it).
_PAGE = RowQuery(
    select(
        *User.table_columns(_READ_COLUMNS),
        select(func.count()).select_from(_users).scalar_subquery().label("total"),
    )
    .order_by(_users.c.created_at, _users.c.id)
    .limit(bindparam("size"))
    .offset(bindparam("offset")),
    for_rendering=True,
)
_TOTAL = len(_READ_COLUMNS)
_COUNT = RowQuery(select(func.count()).select_from(_users))
_ONE = RowQuery(
    select(*User.table_columns(_READ_COLUMNS)).where(_users.c.id == bindparam("id")),
    for_rendering=True,
)


def user_body(user: User, viewer: Principal | None) -> dict[str, Any]:
    """``user`` as ``viewer`` may see it: e-mail and admin flag for self or admins only."""
    privileged = viewer is not None and viewer.may_act_on(user.id)
    return user.to_dict(show=_PRIVILEGED_FIELDS if privileged else None)


def _row_body(row: Sequence[Any], viewer: Principal | None) -> dict[str, Any]:
    """:func:`user_body` of a row of ``_READ_COLUMNS``."""
    if viewer is not None and viewer.may_act_on(row[_ID]):
        return _privileged_row(row)
    return _public_row(row)


def _rows_body(rows: Sequence[Sequence[Any]], viewer: Principal | None) -> list[dict[str, Any]]:
    """:func:`_row_body` of each row, the viewer's rights looked at once, not per row."""
    if viewer is not None and viewer.is_admin:  # may act on every user
        return _privileged_rows(rows)
    bodies = _public_rows(rows)
    if viewer is not None:  # may act on this one user only
        own = viewer.user_id
        for index, row in enumerate(rows):
            if own == row[_ID]:
                bodies[index] = _privileged_row(row)
    return bodies


async def _invalidate_users() -> None:
    guards: Guards = current_app.extensions["guards"].guards
    await guards.invalidate(USERS_NAMESPACE, current_app._get_current_object())  # type: ignore[attr-defined]


async def _target(user_ref: str, principal: Principal) -> User:
    """The user a ``/<user_ref>`` route names: ``current`` or a UUID (404 otherwise)."""
    if user_ref == _CURRENT:
        return await principal.load_user()
    user = await get_session().get(User, parse_uuid(user_ref))
    if user is None:
        raise NotFound("No user with this id.")
    return user


def _may_change(principal: Principal, user: User) -> None:
    if not principal.may_act_on(user.id):
        raise Forbidden("Only the account's owner or an admin may change it.")


def _refuse_own_password(principal: Principal, user: User | None) -> None:
    """422 naming ``password`` when the caller sets their own password without the old one.

    A stolen session or token must not be enough to lock the owner out.
    """
    if user is not None and user.id == principal.user_id:
        raise ValidationError(
            [
                {
                    "field": "password",
                    "message": "change your own password with POST "
                    "/api/v1/users/current/password (it needs the old one)",
                }
            ]
        )


async def _reload(user_id: uuid.UUID) -> User | None:
    """The user again, after the session was released for a hash (None if deleted meanwhile).

    The row stays locked until commit (PostgreSQL; SQLite serializes writers), so a
    check of what changed while the hash ran cannot race another writer.
    """
    query = select(User).where(User.id == user_id).with_for_update()
    return (await get_session().execute(query)).scalar_one_or_none()


async def _commit_unique_username() -> None:
    """Commit; a username taken meanwhile (unique index) is 409, not 500."""
    try:
        await get_session().commit()
    except IntegrityError:
        await get_session().rollback()
        raise Conflict("This username is already taken.") from None


@blueprint.post("")
@documented(request=UserCreateRequest, responses={201: UserEnvelope}, errors=(400, 409, 415, 422))
@rate_limited(config="API_RATE_LIMIT")
@rate_limited(config="SIGNUP_RATE_LIMIT", user=False, scope="signup")
@phased_api_view
async def sign_up() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Create an account: ``{username, password, email?, full_name?}``.

    A taken name is refused before the password is hashed, so it costs no hash.
    """
    fields = User.validate(await json_body(), create=True)
    password = fields.pop("password")
    async with database_phase(read_only=True, release=True):
        taken = await User.by_username(get_session(), fields["username"]) is not None
    if taken:
        raise Conflict("This username is already taken.")
    password_hash = await ahash_password(password)
    async with database_phase():
        user = User(**fields, password_hash=password_hash)
        get_session().add(user)
        await _commit_unique_username()
    await _invalidate_users()
    viewer = Principal(user.id, user.is_admin, frozenset(), "cookie")
    location = url_for("users.get_user", user_ref=str(user.id))
    return {"data": user_body(user, viewer)}, 201, {"Location": location}


@blueprint.get("")
@documented(query=PageQuery, responses={200: UserPage}, errors=(401, 403, 422))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:read")
@cached(minutes=1, unique_per_user=True, namespace=USERS_NAMESPACE, query=("page", "per_page"))
@api_view
async def list_users() -> dict[str, Any]:
    """Users in creation order, paginated (``?page=&per_page=``, at most 100 a page)."""
    return await users_page()


async def users_page() -> dict[str, Any]:
    """The list's body, for the request's ``?page=&per_page=`` (also benchmarked uncached).

    One statement reads the page and the total; only a page past the end, which
    has no row to carry the total, costs a second one.
    """
    page = pagination()
    viewer = await current_principal()
    database, session = get_database(), current_session()
    rows = await _PAGE.fetch(database, session, size=page.size, offset=page.offset)
    if rows:
        total: int = rows[0][_TOTAL]
    elif page.offset == 0:
        total = 0  # the one statement saw no user at all
    else:
        total = (await _COUNT.fetch(database, session))[0][0]
    return page_envelope(_rows_body(rows, viewer), total, page)


@blueprint.get("/<user_ref>")
@documented(responses={200: UserEnvelope}, errors=(401, 403, 404))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:read")
@cached(minutes=1, unique_per_user=True, namespace=USERS_NAMESPACE, query=())
@api_view
async def get_user(user_ref: str) -> dict[str, Any]:
    """One user by id, or ``current`` for the caller."""
    principal = await require_principal()
    user_id = principal.user_id if user_ref == _CURRENT else parse_uuid(user_ref)
    rows = await _ONE.fetch(get_database(), current_session(), id=user_id)
    if rows:
        return {"data": _row_body(rows[0], principal)}
    if user_ref == _CURRENT:
        return {"data": user_body(await principal.load_user(), principal)}  # 401 if gone
    raise NotFound("No user with this id.")


@blueprint.route("/<user_ref>", methods=["PUT", "PATCH"])
@documented(
    request=UserUpdateRequest,
    responses={200: UserEnvelope},
    errors=(400, 401, 403, 404, 409, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:write")
@phased_api_view
async def update_user(user_ref: str) -> dict[str, Any]:
    """Partial update through ``from_dict`` (PUT as in the original series, or PATCH).

    An admin may set another user's password here; one's own needs the old one.
    """
    principal = await require_principal()
    data = await json_body()
    async with database_phase():
        user = await _target(user_ref, principal)
        _may_change(principal, user)
        if "password" in data:
            _refuse_own_password(principal, user)
        fields = User.validate(data, create=False)
        password = fields.pop("password", None)
        if password is not None:
            await get_session().close()  # nothing held while the hash waits
    password_hash = None if password is None else await ahash_password(password)
    async with database_phase():
        if password_hash is not None:
            reloaded = await _reload(user.id)
            if reloaded is None:
                raise NotFound("No user with this id.")
            user = reloaded
            user.set_password_hash(password_hash)
        user.from_dict(**fields)
        await _commit_unique_username()
    forget_principals(user.id)  # an admin may have set a new password
    await _invalidate_users()
    return {"data": user_body(user, principal)}


async def _password_change_account() -> str | None:
    """The account a password change is for (the caller's id): the guards' failure key.

    Runs before the view, so it never raises: a request without a usable principal
    names no account (it is refused with 401 before any password is checked).
    """
    try:
        principal = await current_principal()
    except HTTPException:
        return None
    return None if principal is None else principal.user_key


@blueprint.post("/current/password")
@documented(
    request=PasswordChangeRequest,
    responses={204: NoContent},
    errors=(400, 401, 403, 409, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@protected(
    config="PROTECT_LIMIT",
    statuses={422},
    block_status=429,
    reset_on_success=True,
    key=_password_change_account,
    block_detail="Too many failed password changes.",
    scope="password-change",
)
@requires_scopes("users:write")
@phased_api_view
async def change_password() -> tuple[str, int]:
    """``{old_password, new_password}``: 204; ends the user's other sessions.

    The old password is verified and the new one hashed with no transaction open;
    a password changed by another request meanwhile is 409, not overwritten.
    Refusals (422, a wrong old password among them) count per account and per
    client IP, ``PROTECT_LIMIT`` each, as failed logins do: a stolen session or
    token (an app's included) cannot guess the password here at the API's rate.
    """
    principal = await require_principal()
    data = await json_body()
    require_fields(data, {"old_password": (str, 1024), "new_password": (str, 1024)})
    try:
        User.validate({"password": data["new_password"]}, create=False)
    except ValidationError as error:
        raise ValidationError(
            [{"field": "new_password", "message": e["message"]} for e in error.errors]
        ) from None
    async with database_phase(read_only=True, release=True):
        current_hash = (await principal.load_user()).password_hash
    if current_hash is None or not await averify_password(current_hash, data["old_password"]):
        raise ValidationError([{"field": "old_password", "message": "is not the current password"}])
    new_hash = await ahash_password(data["new_password"])
    async with database_phase():
        user = await _reload(principal.user_id) or await principal.load_user()  # 401 if gone
        if user.password_hash != current_hash:
            raise Conflict("The password was changed by another request meanwhile.")
        user.set_password_hash(new_hash)
        await get_session().commit()
    forget_principals(user.id)
    if principal.via == "cookie":
        log_in(user)  # this session continues under the new version
    await _invalidate_users()  # modified_at changed
    return "", 204


@blueprint.delete("/<user_ref>")
@documented(responses={204: NoContent}, errors=(401, 403, 404))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:write")
@api_view
async def delete_user(user_ref: str) -> tuple[str, int]:
    """Delete the caller's account (``current``) or, as an admin, any account.

    Its apps are deleted with it, and with them every token other users gave them:
    this worker stops accepting those at once (others within ``AUTH_CACHE_SECONDS``).
    """
    principal = await require_principal()
    user = await _target(user_ref, principal)
    if not principal.may_act_on(user.id):
        raise Forbidden("Only an admin may delete another user's account.")
    session = get_session()
    # The account's apps go with it, and so do the tokens other users gave them.
    app_users = (
        await session.execute(
            select(OAuthGrant.user_id)
            .join(OAuthClient, OAuthGrant.client_id == OAuthClient.id)
            .where(OAuthClient.user_id == user.id)
            .distinct()
        )
    ).scalars()
    affected = {user.id, *app_users}
    await session.delete(user)
    await session.commit()
    for user_id in affected:
        forget_principals(user_id)
    await _invalidate_users()
    return "", 204


@blueprint.put("/by-username/<username>")
@documented(
    request=UserUpdateRequest,
    responses={200: UserEnvelope, 201: UserEnvelope},
    errors=(400, 401, 403, 409, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:write")
@phased_api_view
async def put_by_username(username: str) -> tuple[dict[str, Any], int]:
    """Create-or-update by username (admins): the original series' get_or_create use.

    Concurrent calls for one name create exactly one row. An admin's own password
    is refused here (422 naming ``password``): it changes only with the old one.
    """
    principal = await require_principal()
    if not principal.is_admin:
        raise Forbidden("Only an admin may create or update users by username.")
    data = await json_body()
    given = data.pop("username", username)
    if not isinstance(given, str) or given.lower() != username.lower():
        raise ValidationError([{"field": "username", "message": "must match the URL"}])
    User.validate({"username": username}, create=False)
    fields = User.validate(data, create=False)
    password = fields.pop("password", None)
    password_hash: str | None = None
    if password is not None:
        async with database_phase(read_only=True, release=True):
            _refuse_own_password(principal, await User.by_username(get_session(), username))
        password_hash = await ahash_password(password)
    async with database_phase():
        defaults = fields if password_hash is None else {**fields, "password_hash": password_hash}
        session = get_session()
        user, created = await User.get_or_create(session, defaults=defaults, username=username)
        if not created:
            if password_hash is not None:
                _refuse_own_password(principal, user)  # renamed to this name meanwhile
                user.set_password_hash(password_hash)
            user.from_dict(**fields)
        await _commit_unique_username()
    forget_principals(user.id)
    await _invalidate_users()
    return {"data": user_body(user, principal)}, (201 if created else 200)
