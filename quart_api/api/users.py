"""``/api/v1/users``: sign-up, list, read, update, password, delete, create-or-update.

Every route is rate limited (``API_RATE_LIMIT``); reads are cached per user and
every write invalidates the ``users`` cache namespace, so a change is visible
at once. A caller sees a user's e-mail and admin flag only on their own
account or as an admin; fields a caller may not see are left out.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app, url_for
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Conflict, Forbidden, NotFound

from quart_api.api.common import (
    api_view,
    json_body,
    page_envelope,
    pagination,
    parse_uuid,
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
from quart_api.db import get_session
from quart_api.guards import Guards, cached, rate_limited
from quart_api.models import User, ValidationError
from quart_api.passwords import averify_password

__all__ = ["USERS_NAMESPACE", "blueprint", "user_body", "users_page"]

blueprint = Blueprint("users", __name__, url_prefix="/api/v1/users")

#: Cache namespace of every cached users read; writes bump its generation.
USERS_NAMESPACE = "users"
_CURRENT = "current"


def user_body(user: User, viewer: Principal | None) -> dict[str, Any]:
    """``user`` as ``viewer`` may see it: e-mail and admin flag for self or admins only."""
    privileged = viewer is not None and viewer.may_act_on(user.id)
    return user.to_dict(show=["email", "is_admin"] if privileged else None)


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
@api_view
async def sign_up() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Create an account: ``{username, password, email?, full_name?}``."""
    data = await json_body()
    user = User()
    # Validate and hash first: on SQLite the first query takes the write lock.
    await user.afrom_dict(**data)
    session = get_session()
    if await User.by_username(session, user.username) is not None:
        raise Conflict("This username is already taken.")
    session.add(user)
    await _commit_unique_username()
    await _invalidate_users()
    viewer = Principal(user.id, user.is_admin, frozenset(), "cookie")
    location = url_for("users.get_user", user_ref=str(user.id))
    return {"data": user_body(user, viewer)}, 201, {"Location": location}


@blueprint.get("")
@documented(query=PageQuery, responses={200: UserPage}, errors=(401, 403, 422))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:read")
@cached(minutes=1, unique_per_user=True, namespace=USERS_NAMESPACE)
@api_view
async def list_users() -> dict[str, Any]:
    """Users in creation order, paginated (``?page=&per_page=``, at most 100 a page)."""
    return await users_page()


async def users_page() -> dict[str, Any]:
    """The list's body, for the request's ``?page=&per_page=`` (also benchmarked uncached)."""
    page = pagination()
    viewer = await current_principal()
    session = get_session()
    total = (await session.execute(select(func.count()).select_from(User))).scalar_one()
    users = (
        await session.execute(
            select(User).order_by(User.created_at, User.id).offset(page.offset).limit(page.size)
        )
    ).scalars()
    return page_envelope([user_body(u, viewer) for u in users], total, page)


@blueprint.get("/<user_ref>")
@documented(responses={200: UserEnvelope}, errors=(401, 403, 404))
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:read")
@cached(minutes=1, unique_per_user=True, namespace=USERS_NAMESPACE)
@api_view
async def get_user(user_ref: str) -> dict[str, Any]:
    """One user by id, or ``current`` for the caller."""
    principal = await require_principal()
    return {"data": user_body(await _target(user_ref, principal), principal)}


@blueprint.route("/<user_ref>", methods=["PUT", "PATCH"])
@documented(
    request=UserUpdateRequest,
    responses={200: UserEnvelope},
    errors=(400, 401, 403, 404, 409, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:write")
@api_view
async def update_user(user_ref: str) -> dict[str, Any]:
    """Partial update through ``from_dict`` (PUT as in the original series, or PATCH)."""
    principal = await require_principal()
    user = await _target(user_ref, principal)
    _may_change(principal, user)
    data = await json_body()
    if "password" in data and principal.user_id == user.id:
        # Changing one's own password needs the old one: a stolen session or token
        # must not be enough to lock the owner out.
        raise ValidationError(
            [
                {
                    "field": "password",
                    "message": "change your own password with POST "
                    "/api/v1/users/current/password (it needs the old one)",
                }
            ]
        )
    await user.afrom_dict(**data)
    await _commit_unique_username()
    forget_principals(user.id)  # an admin may have set a new password
    await _invalidate_users()
    return {"data": user_body(user, principal)}


@blueprint.post("/current/password")
@documented(
    request=PasswordChangeRequest,
    responses={204: NoContent},
    errors=(400, 401, 403, 415, 422),
)
@rate_limited(config="API_RATE_LIMIT")
@requires_scopes("users:write")
@api_view
async def change_password() -> tuple[str, int]:
    """``{old_password, new_password}``: 204; ends the user's other sessions."""
    principal = await require_principal()
    data = await json_body()
    require_fields(data, {"old_password": (str, 1024), "new_password": (str, 1024)})
    user = await principal.load_user()
    if user.password_hash is None or not await averify_password(
        user.password_hash, data["old_password"]
    ):
        raise ValidationError([{"field": "old_password", "message": "is not the current password"}])
    try:
        await user.afrom_dict(password=data["new_password"])
    except ValidationError as error:
        raise ValidationError(
            [{"field": "new_password", "message": e["message"]} for e in error.errors]
        ) from None
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
    """Delete the caller's account (``current``) or, as an admin, any account."""
    principal = await require_principal()
    user = await _target(user_ref, principal)
    if not principal.may_act_on(user.id):
        raise Forbidden("Only an admin may delete another user's account.")
    session = get_session()
    await session.delete(user)
    await session.commit()
    forget_principals(user.id)
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
@api_view
async def put_by_username(username: str) -> tuple[dict[str, Any], int]:
    """Create-or-update by username (admins): the original series' get_or_create use."""
    principal = await require_principal()
    if not principal.is_admin:
        raise Forbidden("Only an admin may create or update users by username.")
    data = await json_body()
    given = data.pop("username", username)
    if not isinstance(given, str) or given.lower() != username.lower():
        raise ValidationError([{"field": "username", "message": "must match the URL"}])
    User.validate({"username": username}, create=False)
    clean = User.validate(data, create=False)
    password = clean.pop("password", None)
    session = get_session()
    user, created = await User.get_or_create(session, defaults=clean, username=username)
    if not created:
        await user.afrom_dict(**clean)
    if password is not None:
        await user.aset_password(password)
    await _commit_unique_username()
    forget_principals(user.id)
    await _invalidate_users()
    return {"data": user_body(user, principal)}, (201 if created else 200)
