"""The HTTP errors the guards answer with, and their headers.

They subclass werkzeug's exceptions and carry their data
(``RateLimitExceeded.retry_after``), so an app's own error handlers can
render them; without such handlers they render as problem+json.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from quart import Response
from werkzeug.exceptions import HTTPException, ServiceUnavailable, TooManyRequests

from quart_api.guards.stores.base import LimitState
from quart_api.problem import problem_response

__all__ = [
    "Blocked",
    "GuardUnavailable",
    "RateLimitExceeded",
    "rate_limit_headers",
]


class RateLimitExceeded(TooManyRequests):
    """429: a rate limit refused the request; ``retry_after`` in whole seconds."""

    def __init__(self, retry_after: int, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(
            f"Too many requests: retry after {retry_after} second{'' if retry_after == 1 else 's'}."
        )
        self.retry_after = retry_after
        self.limit_headers = headers or []

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [
            ("Content-Type", "application/problem+json"),
            ("Retry-After", str(self.retry_after)),
            *self.limit_headers,
        ]

    def get_response(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return problem_response(429, self.description, headers=dict(self.get_headers()[1:]))


class Blocked(HTTPException):
    """A ``@protected`` ban: the configured block status, no hint of a ban by default."""

    def __init__(self, status: int, retry_after: int | None = None) -> None:
        self.code = status
        super().__init__("The requested resource was not found." if status == 404 else None)
        self.retry_after = retry_after

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        headers = [("Content-Type", "application/problem+json")]
        if self.code == 429 and self.retry_after:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers

    def get_response(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return problem_response(
            self.code or 404, self.description, headers=dict(self.get_headers()[1:])
        )


class GuardUnavailable(ServiceUnavailable):
    """503: a ``fail_closed`` limit could not reach its store."""

    def get_response(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return problem_response(
            503, "Rate limiting is unavailable; retry shortly.", headers={"Retry-After": "1"}
        )


def seconds_up(ms: int) -> int:
    """Whole seconds, rounded up: a client told to wait must not come back early."""
    return max(0, math.ceil(ms / 1000))


def rate_limit_headers(
    items: Iterable[tuple[str, int, int, LimitState]], legacy: bool
) -> list[tuple[str, str]]:
    """``RateLimit`` / ``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers-10).

    ``items`` are ``(policy name, quota, window seconds, state)``. With ``legacy``,
    also the older ``RateLimit-Limit/-Remaining/-Reset`` trio for the most
    restrictive policy.
    """
    items = list(items)
    if not items:
        return []
    headers = [
        (
            "RateLimit",
            ", ".join(f'"{n}";r={s.remaining};t={seconds_up(s.reset_ms)}' for n, _, _, s in items),
        ),
        ("RateLimit-Policy", ", ".join(f'"{n}";q={q};w={w}' for n, q, w, _ in items)),
    ]
    if legacy:
        _, quota, _, state = min(items, key=lambda item: item[3].remaining)
        headers += [
            ("RateLimit-Limit", str(quota)),
            ("RateLimit-Remaining", str(state.remaining)),
            ("RateLimit-Reset", str(seconds_up(state.reset_ms))),
        ]
    return headers
