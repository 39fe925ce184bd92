"""What every API view shares: JSON bodies, pagination, envelopes, the DB deadline.

Views that hash a password (sign-up, login, password changes, create-or-update)
work in phases: ``phased_api_view`` instead of ``api_view``, each database phase
bounded by ``database_phase()``, and the phase before a hash gives its connection
back. No transaction, pooled connection or SQLite write lock is held while the
request waits for a hashing slot, and the wait is not charged to ``DATABASE_TIMEOUT``.

Status codes follow DESIGN.md: a body that is not JSON (wrong content type) is
415, malformed JSON is 400, well-formed but invalid fields are 422 with
``errors: [{"field", "message"}]`` and never echo the submitted value.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

import orjson
from quart import request
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, Conflict, NotFound, UnsupportedMediaType

from quart_api.api.errors import DatabaseBusy, HashingBusy, InvalidFields
from quart_api.db import SQLITE_BEGIN_OPTION, DatabaseUnavailable, get_database, get_session
from quart_api.models import User, ValidationError
from quart_api.passwords import PasswordHashingBusy

__all__ = [
    "MAX_EXPIRES_IN",
    "Page",
    "api_view",
    "database_phase",
    "enforce_holding_limit",
    "expires_in",
    "json_body",
    "optional_json_body",
    "page_envelope",
    "pagination",
    "parse_uuid",
    "phased_api_view",
    "require_fields",
]

P = ParamSpec("P")
T = TypeVar("T")

MAX_PER_PAGE = 100
#: Far past any real table, and small enough that the row offset fits a bigint.
MAX_PAGE = 1_000_000_000
DEFAULT_PER_PAGE = 20
#: Longest lifetime a token or share link may be given (one year), in seconds.
MAX_EXPIRES_IN = 365 * 24 * 3600


def api_view(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Bound the view's database work by ``DATABASE_TIMEOUT`` (503 past it).

    A stalled database never answers and its own statement timeout never fires,
    so the bound is client-side and covers pool checkout too. Invalid fields, an
    unavailable database and a full password-hashing queue leave the view as HTTP
    errors (422, 503), which the guards decorate with RateLimit headers like every
    other response.
    """

    @functools.wraps(view)
    async def bounded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            async with get_database().deadline():
                return await view(*args, **kwargs)
        except ValidationError as error:
            raise InvalidFields(error.errors) from None
        except DatabaseUnavailable as error:
            raise DatabaseBusy() from error
        except PasswordHashingBusy as error:
            raise HashingBusy() from error

    return bounded


def phased_api_view(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``api_view`` for views that hash passwords: the view bounds each database phase.

    Hashing waits for a slot and then costs tens of milliseconds of CPU; inside one
    deadline around the whole view it would eat the database's time budget, and
    inside a transaction it would hold a pooled connection (on SQLite, the write
    lock) the whole while. The view wraps its database work in
    :func:`database_phase` blocks, the one before a hash with ``release=True``.
    """

    @functools.wraps(view)
    async def phased(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await view(*args, **kwargs)
        except ValidationError as error:
            raise InvalidFields(error.errors) from None
        except DatabaseUnavailable as error:
            raise DatabaseBusy() from error
        except PasswordHashingBusy as error:
            raise HashingBusy() from error

    return phased


@asynccontextmanager
async def database_phase(*, read_only: bool = False, release: bool = False) -> AsyncIterator[None]:
    """One bounded stretch of a phased view's database work (``DATABASE_TIMEOUT``).

    Args:
        read_only: start the transaction, if this phase starts one, as a reader: on
            SQLite a deferred one, which does not queue behind writers.
        release: when the block succeeds, end the request's transaction (rolled
            back) and give its connection back to the pool, before the view goes on
            to hash. Loaded objects stay readable but detached: a later phase
            re-reads what it changes.
    """
    database = get_database()
    async with database.deadline():
        session = get_session()
        if read_only and database.is_sqlite and not session.in_transaction():
            await session.connection(execution_options={SQLITE_BEGIN_OPTION: "DEFERRED"})
        yield
        if release:
            await session.close()


async def json_body() -> dict[str, Any]:
    """The request's JSON object; 415 for another content type, 400 when malformed."""
    mimetype = request.mimetype
    if mimetype != "application/json" and not (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        raise UnsupportedMediaType(
            "The request body must be JSON: send 'Content-Type: application/json'."
        )
    raw = await request.get_data(as_text=False)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"The request body is not valid JSON: {error.msg}.") from None
    if not isinstance(data, dict):
        raise ValidationError(
            [{"field": "(body)", "message": "the request body must be a JSON object"}]
        )
    return data


async def optional_json_body() -> dict[str, Any]:
    """:func:`json_body`, or ``{}`` when the request has no body at all."""
    if not await request.get_data(as_text=False):
        return {}
    return await json_body()


def expires_in(data: Mapping[str, Any], errors: list[dict[str, str]]) -> timedelta | None:
    """The body's optional ``expires_in`` (whole seconds, 1..one year); a bad one is
    added to ``errors``."""
    value = data.get("expires_in")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EXPIRES_IN:
        errors.append(
            {"field": "expires_in", "message": f"must be whole seconds, 1..{MAX_EXPIRES_IN}"}
        )
        return None
    return timedelta(seconds=value)


async def enforce_holding_limit(user_id: uuid.UUID, held: Any, limit: int, what: str) -> None:
    """409 when the user already holds ``limit`` live ``what`` (tokens, share links).

    Locks the user's row first (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
    serializes writers), so concurrent creations by one user are counted one after
    another and cannot overshoot the limit together.

    Args:
        held: a ``SELECT count(...)`` of the user's live ones.
    """
    session = get_session()
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    if (await session.execute(held)).scalar_one() >= limit:
        raise Conflict(
            f"You hold {limit} live {what}, the most one account may hold: "
            f"revoke one before creating another."
        )


def require_fields(data: Mapping[str, Any], spec: Mapping[str, tuple[type, int]]) -> None:
    """Check a small non-model body: each field present, of its type, not too long."""
    errors: list[dict[str, str]] = []
    for name in data:
        if name not in spec:
            errors.append({"field": name, "message": "unknown field"})
    for name, (kind, max_length) in spec.items():
        if name not in data:
            errors.append({"field": name, "message": "field is required"})
        elif not isinstance(data[name], kind) or isinstance(data[name], bool):
            errors.append({"field": name, "message": f"must be a {kind.__name__}"})
        elif isinstance(data[name], str) and len(data[name]) > max_length:
            errors.append({"field": name, "message": f"must be at most {max_length} characters"})
    if errors:
        raise ValidationError(errors)


def parse_uuid(value: str) -> uuid.UUID:
    """A UUID path segment; a malformed one is simply not found (404)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("No such resource.") from None


class Page:
    """``page`` (from 1) and ``per_page`` (1..100) of a list request."""

    __slots__ = ("number", "size")

    def __init__(self, number: int, size: int) -> None:
        self.number = number
        self.size = size

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def pagination() -> Page:
    """Read ``?page=&per_page=``; 422 naming the parameter when out of range."""
    args = request.args
    errors: list[dict[str, str]] = []
    number = _page_parameter(args.getlist("page"), "page", 1, MAX_PAGE, errors)
    size = _page_parameter(
        args.getlist("per_page"), "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE, errors
    )
    if errors:
        raise ValidationError(errors)
    return Page(number, size)


def _page_parameter(
    values: list[str], name: str, default: int, upper: int, errors: list[dict[str, str]]
) -> int:
    """The first of a query parameter's ``values`` as a number in ``1..upper``
    (``default`` when absent); a bad one is added to ``errors``.

    ``getlist``, not ``get``: werkzeug's ``get`` raises and catches a ``KeyError``
    for every parameter the query leaves out.
    """
    if not values:
        return default
    try:
        number = int(values[0])
    except ValueError:
        errors.append({"field": name, "message": "must be an integer"})
        return default
    if number < 1:
        errors.append({"field": name, "message": "must be at least 1"})
    elif number > upper:
        errors.append({"field": name, "message": f"must be at most {upper}"})
    return number


def page_envelope(items: list[dict[str, Any]], total: int, page: Page) -> dict[str, Any]:
    """The list envelope of the original series' public API.

    ``prev_page`` leads back to data: from past the end (``?page=999`` of a one-page
    list) it is the last page, not ``page - 1``, which would be empty too.
    """
    total_pages = max(1, math.ceil(total / page.size))
    return {
        "data": items,
        "total": total,
        "page": page.number,
        "total_pages": total_pages,
        "next_page": page.number + 1 if page.number < total_pages else None,
        "prev_page": min(page.number - 1, total_pages) if page.number > 1 else None,
    }
