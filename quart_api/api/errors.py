"""Every error the service returns is RFC 9457 problem+json.

Routing errors (404, 405), oversized bodies (413), validation failures (422),
an unavailable database or a full password-hashing queue (503) and unhandled
exceptions (500, logged once with the traceback, never sent to the client) all
pass through here. A logged path never shows a share link's secret.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from quart import Quart, Response, current_app, request
from werkzeug.exceptions import HTTPException, ServiceUnavailable, UnprocessableEntity

from quart_api.db import DatabaseUnavailable
from quart_api.logging_setup import redact_secrets
from quart_api.models import ValidationError
from quart_api.passwords import PasswordHashingBusy
from quart_api.problem import problem_response
from quart_api.settings import RateSpec

__all__ = ["DatabaseBusy", "HashingBusy", "InvalidFields", "register_error_handlers"]

log = logging.getLogger(__name__)

# Headers an HTTPException may carry that still make sense on a problem body: the
# guards' 429 carries its RateLimit headers (and the legacy trio when enabled).
_KEPT_HEADERS = frozenset(
    {
        "allow",
        "retry-after",
        "www-authenticate",
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    }
)


class InvalidFields(UnprocessableEntity):
    """422 naming each invalid field: a :class:`ValidationError` as an HTTP error.

    Views raise it (through ``api_view``) rather than the bare ``ValidationError``
    so the guards treat it like any other refusal and add the RateLimit headers.
    """

    def __init__(self, errors: list[dict[str, str]]) -> None:
        fields = ", ".join(e["field"] for e in errors)
        super().__init__(f"The request has invalid fields: {fields}.")
        self.errors = errors


class DatabaseBusy(ServiceUnavailable):
    """503 with ``Retry-After``: a :class:`DatabaseUnavailable` as an HTTP error.

    The detail says which it was: a database that refused the connection (down,
    restarting, out of connections, wrong credentials) or one that did not answer in
    time (stalled, overloaded), read from the ``DatabaseUnavailable`` it was raised from.
    """

    _given: str | None = None

    @property
    def description(self) -> str:
        if self._given:
            return self._given
        cause = self.__cause__
        if isinstance(cause, DatabaseUnavailable) and cause.refused:
            return "The database refused the connection; retry shortly."
        return "The database did not answer in time; retry shortly."

    @description.setter
    def description(self, value: str | None) -> None:
        self._given = value

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [*super().get_headers(*args, **kwargs), ("Retry-After", "1")]


class HashingBusy(ServiceUnavailable):
    """503 with ``Retry-After``: a :class:`PasswordHashingBusy` as an HTTP error."""

    description = "Too many password checks are in progress; retry shortly."

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        retry_after = str(PasswordHashingBusy.retry_after)
        return [*super().get_headers(*args, **kwargs), ("Retry-After", retry_after)]


def register_error_handlers(app: Quart) -> None:
    """Install the problem+json handlers on ``app``."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DatabaseBusy, _database_busy)
    app.register_error_handler(PasswordHashingBusy, _hashing_busy)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(DatabaseUnavailable, _database_unavailable)
    app.register_error_handler(Exception, _unhandled_error)


async def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    detail = error.description if status != 500 else "The server failed to answer."
    if not detail:  # e.g. a guard's block response: still name the problem
        detail = _default_detail(status)
    response = problem_response(status, detail, errors=getattr(error, "errors", None))
    for name, value in error.get_headers():
        if name.lower() in _KEPT_HEADERS:
            response.headers.add(name, value)
    if status == 429 and "RateLimit" not in response.headers:
        _describe_ban(response)
    return response


def _describe_ban(response: Response) -> None:
    """RateLimit headers for a 429 that no rate limit sent: a ``@protected`` ban.

    Its policy is the failures allowed (``PROTECT_LIMIT``), its quota is spent, and
    it resets when the ban ends (``Retry-After``), so a client reads every 429 alike.
    """
    retry_after = response.headers.get("Retry-After")
    if retry_after is None or not retry_after.isdigit():
        retry_after = "1"
        response.headers["Retry-After"] = retry_after
    protect: RateSpec = current_app.extensions["settings"].protect_limit
    response.headers["RateLimit"] = f'"failures";r=0;t={retry_after}'
    response.headers["RateLimit-Policy"] = f'"failures";q={protect.limit};w={protect.seconds}'


def _default_detail(status: int) -> str:
    try:
        return HTTPStatus(status).description or HTTPStatus(status).phrase
    except ValueError:
        return "The request failed."


async def _validation_error(error: ValidationError) -> Response:
    return await _http_error(InvalidFields(error.errors))


async def _database_busy(error: DatabaseBusy) -> Response:
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        redact_secrets(request.path),
        error.__cause__,
    )
    return await _http_error(error)


async def _hashing_busy(error: PasswordHashingBusy) -> Response:
    busy = HashingBusy()
    busy.__cause__ = error
    return await _http_error(busy)


async def _database_unavailable(error: DatabaseUnavailable) -> Response:
    busy = DatabaseBusy()
    busy.__cause__ = error
    return await _database_busy(busy)


async def _unhandled_error(error: Exception) -> Response:
    log.error(
        "unhandled error on %s %s", request.method, redact_secrets(request.path), exc_info=error
    )
    return problem_response(500, "The server failed to answer; the error was logged.")
