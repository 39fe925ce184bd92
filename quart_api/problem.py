"""RFC 9457 ``application/problem+json`` responses.

Shared by the guards (429, block responses) and the service's error handlers,
so a library user gets the same error shape as the reference service without
installing our handlers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from quart import Response

from quart_api.json_provider import dumps_bytes

__all__ = ["PROBLEM_JSON", "problem_body", "problem_response"]

PROBLEM_JSON = "application/problem+json"


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    errors: Sequence[Mapping[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The problem document; ``title`` defaults to the status phrase."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "status": status,
        "title": title or _phrase(status),
    }
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = list(errors)
    body.update(extra)
    return body


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    errors: Sequence[Mapping[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A ready ``Response`` carrying :func:`problem_body`."""
    body = dumps_bytes(problem_body(status, detail, title=title, errors=errors, **extra))
    response = Response(body, status=status, content_type=PROBLEM_JSON)
    if headers:
        response.headers.update(headers)
    return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
