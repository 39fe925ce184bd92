"""What every API view shares: JSON bodies, pagination, envelopes, the DB deadline.

Status codes follow DESIGN.md: a body that is not JSON (wrong content type) is
415, malformed JSON is 400, well-formed but invalid fields are 422 with
``errors: [{"field", "message"}]`` and never echo the submitted value.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import orjson
from quart import request
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType

from quart_api.api.errors import DatabaseBusy, InvalidFields
from quart_api.db import DatabaseUnavailable, get_database
from quart_api.models import ValidationError

__all__ = [
    "Page",
    "api_view",
    "json_body",
    "page_envelope",
    "pagination",
    "parse_uuid",
]

P = ParamSpec("P")
T = TypeVar("T")

MAX_PER_PAGE = 100
#: Far past any real table, and small enough that the row offset fits a bigint.
MAX_PAGE = 1_000_000_000
DEFAULT_PER_PAGE = 20


def api_view(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Bound the view's database work by ``DATABASE_TIMEOUT`` (503 past it).

    A stalled database never answers and its own statement timeout never fires,
    so the bound is client-side and covers pool checkout too. Invalid fields and
    an unavailable database leave the view as HTTP errors (422, 503), which the
    guards decorate with RateLimit headers like every other response.
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

    return bounded


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
    errors: list[dict[str, str]] = []
    values: dict[str, int] = {}
    for name, default, upper in (
        ("page", 1, MAX_PAGE),
        ("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE),
    ):
        raw = request.args.get(name)
        if raw is None:
            values[name] = default
            continue
        try:
            number = int(raw)
        except ValueError:
            errors.append({"field": name, "message": "must be an integer"})
            continue
        if number < 1:
            errors.append({"field": name, "message": "must be at least 1"})
        elif upper is not None and number > upper:
            errors.append({"field": name, "message": f"must be at most {upper}"})
        values[name] = number
    if errors:
        raise ValidationError(errors)
    return Page(values["page"], values["per_page"])


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
