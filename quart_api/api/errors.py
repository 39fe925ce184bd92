"""Every error the service returns is RFC 9457 problem+json.

Routing errors (404, 405), oversized bodies (413), validation failures (422),
an unavailable database (503) and unhandled exceptions (500, logged once with
the traceback, never sent to the client) all pass through here.
"""

from __future__ import annotations

import logging

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from quart_api.db import DatabaseUnavailable
from quart_api.models import ValidationError
from quart_api.problem import problem_response

__all__ = ["register_error_handlers"]

log = logging.getLogger(__name__)

# Headers an HTTPException may carry that still make sense on a problem body.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def register_error_handlers(app: Quart) -> None:
    """Install the problem+json handlers on ``app``."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(DatabaseUnavailable, _database_unavailable)
    app.register_error_handler(Exception, _unhandled_error)


async def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    detail = error.description if status != 500 else "The server failed to answer."
    response = problem_response(status, detail)
    for name, value in error.get_headers():
        if name in _KEPT_HEADERS:
            response.headers.add(name, value)
    return response


async def _validation_error(error: ValidationError) -> Response:
    fields = ", ".join(e["field"] for e in error.errors)
    return problem_response(
        422, f"The request has invalid fields: {fields}.", errors=error.errors
    )


async def _database_unavailable(error: DatabaseUnavailable) -> Response:
    log.warning("database unavailable on %s %s: %s", request.method, request.path, error)
    return problem_response(
        503, "The database did not answer in time; retry shortly.", headers={"Retry-After": "1"}
    )


async def _unhandled_error(error: Exception) -> Response:
    log.error(
        "unhandled error on %s %s", request.method, request.path, exc_info=error
    )
    return problem_response(500, "The server failed to answer; the error was logged.")
