"""The HTTP errors the guards answer with, and the RateLimit headers.

They subclass werkzeug's exceptions and carry their data
(``RateLimitExceeded.retry_after``), so an app's own error handlers can
render them; without such handlers they render as problem+json (RFC 9457),
by the small renderer here: the guards depend on nothing else of the package.
A ban answered with 404 is werkzeug's own ``NotFound``: the app renders it
exactly as it renders a path that does not exist.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from operator import itemgetter
from typing import Any, Literal

from quart import Response
from werkzeug.exceptions import Forbidden, HTTPException, ServiceUnavailable, TooManyRequests

from quart_api.guards._werkzeug_headers import append_checked
from quart_api.guards.stores.base import LimitState

__all__ = [
    "PROBLEM_JSON",
    "Blocked",
    "Blocklisted",
    "Breach",
    "GuardUnavailable",
    "Policy",
    "PolicySet",
    "RateLimitExceeded",
    "ban_headers",
    "problem_response",
    "put_headers",
    "rate_limit_headers",
    "seconds_up",
]

PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int, detail: str | None, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    """An RFC 9457 ``application/problem+json`` response (``type`` about:blank)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {"type": "about:blank", "status": status, "title": title}
    if detail:
        body["detail"] = detail
    response = Response(json.dumps(body), status=status, content_type=PROBLEM_JSON)
    for name, value in headers:
        response.headers[name] = value
    return response


_NAME = itemgetter(0)


def put_headers(response: Response, headers: Sequence[tuple[str, str]]) -> None:
    """Set ``headers`` on ``response``, each replacing any header of its name.

    One pass over the response's headers finds which names it has already; the others
    are appended together, unchecked: the guards build every value they send from
    numbers and checked names. (``response.headers[name] = value`` searches the whole
    list once per name, and every response of a guarded route gets two or more of
    these.)
    """
    target = response.headers
    present = set(map(str.lower, map(_NAME, target)))  # in C: no Python call per header
    fresh = []
    for name, value in headers:
        if name.lower() in present:
            target.set(name, value)
        else:
            fresh.append((name, value))
    append_checked(target, fresh)


def _retry_hint(seconds: int) -> str:
    return f"retry after {seconds} second{'' if seconds == 1 else 's'}."


class RateLimitExceeded(TooManyRequests):
    """429: a rate limit refused the request; ``retry_after`` in whole seconds."""

    def __init__(self, retry_after: int, headers: Sequence[tuple[str, str]] | None = None) -> None:
        super().__init__(f"Too many requests: {_retry_hint(retry_after)}")
        self.retry_after = retry_after
        self.limit_headers = list(headers or ())

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [
            ("Content-Type", PROBLEM_JSON),
            ("Retry-After", str(self.retry_after)),
            *self.limit_headers,
        ]

    def get_response(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return problem_response(429, self.description, self.get_headers()[1:])


class Blocked(HTTPException):
    """A ``@protected`` ban answered with its ``block_status`` (not 404: see module doc).

    Args:
        status: the block status (429, 403, ...).
        retry_after: seconds until the ban ends (sent as ``Retry-After``).
        detail: what the problem says (``block_detail``); a retry hint is appended.
        headers: more headers (``RateLimit`` and ``RateLimit-Policy`` on a 429).
    """

    def __init__(
        self,
        status: int,
        retry_after: int | None = None,
        detail: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.code = status
        text = detail or (
            "Too many failed attempts." if status == 429 else "The request is refused."
        )
        if retry_after:
            text = f"{text.rstrip('.')}: {_retry_hint(retry_after)}"
        super().__init__(text)
        self.retry_after = retry_after
        self.extra_headers = list(headers)

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        headers = [("Content-Type", PROBLEM_JSON)]
        if self.retry_after:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers + self.extra_headers

    def get_response(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return problem_response(self.code or 429, self.description, self.get_headers()[1:])


class Blocklisted(Forbidden):
    """403: the client's address is on ``GUARDS_BLOCKLIST``."""

    description = "Requests from this address are refused."

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [("Content-Type", PROBLEM_JSON)]

    def get_response(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return problem_response(403, self.description)


@dataclass(frozen=True, slots=True)
class Breach:
    """What ``Guards(on_breach=...)`` is told about one 429 the guards answered.

    Attributes:
        endpoint: the endpoint of the refused request (``request.endpoint``).
        policy: the refusing policy's name, as ``RateLimit-Policy`` names it.
        limit: requests (or, for ``"failures"``, failures) allowed per window.
        window: the window in seconds.
        key_kind: whose budget ran out: ``"ip"``, ``"user"``, ``"key"`` (a custom
            ``key=``), or ``"failures"`` (a ``@protected`` ban answered with 429).
        retry_after: seconds until the request would be allowed (``Retry-After``).
        client: the client address as the guards see it (None: not an IP address).
    """

    endpoint: str
    policy: str
    limit: int
    window: int
    key_kind: Literal["ip", "user", "key", "failures"]
    retry_after: int
    client: str | None


class GuardUnavailable(ServiceUnavailable):
    """503: a ``fail_closed`` limit could not reach its store."""

    def get_response(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return problem_response(
            503, "Rate limiting is unavailable; retry shortly.", [("Retry-After", "1")]
        )


def seconds_up(ms: int) -> int:
    """Whole seconds, rounded up: a client told to wait must not come back early."""
    return max(0, math.ceil(ms / 1000))


class Policy:
    """One rate-limit policy of an endpoint as the headers name it, formatted at start-up."""

    __slots__ = ("item", "kind", "name", "quota", "state_prefix", "window_s")

    def __init__(self, name: str, quota: int, window_s: int, kind: str = "ip") -> None:
        self.name = name
        self.kind = kind
        self.quota = quota
        self.window_s = window_s
        #: its ``RateLimit-Policy`` item
        self.item = f'"{name}";q={quota};w={window_s}'
        #: its ``RateLimit`` item up to the numbers that change per request
        self.state_prefix = f'"{name}";r='


class PolicySet:
    """The policies one ``@rate_limited`` applies to a request (ip, ip+user, user or key).

    Which set applies depends on the request (an anonymous client has no user budget),
    but each set and its ``RateLimit-Policy`` value are fixed: built once, at start-up.
    """

    __slots__ = ("header", "policies")

    def __init__(self, *policies: Policy) -> None:
        self.policies = policies
        self.header = ", ".join(p.item for p in policies)


def rate_limit_headers(
    sets: Sequence[PolicySet], states: Sequence[LimitState], legacy: bool
) -> list[tuple[str, str]]:
    """``RateLimit`` / ``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers-10).

    ``states`` are the limits' answers, one per policy of ``sets`` in order. With
    ``legacy``, also the older ``RateLimit-Limit/-Remaining/-Reset`` trio for the most
    restrictive policy. (``-(-ms // 1000)`` is :func:`seconds_up` of a store's
    ``reset_ms``, which is never negative.)
    """
    if len(sets) == 1:
        policies = sets[0].policies
        policy_value = sets[0].header
    else:
        policies = tuple(p for s in sets for p in s.policies)
        policy_value = ", ".join(s.header for s in sets)
    items = []  # a loop, not a comprehension: no frame of its own
    for p, s in zip(policies, states, strict=True):
        items.append(f"{p.state_prefix}{s.remaining};t={-(-s.reset_ms // 1000)}")
    headers = [("RateLimit", ", ".join(items)), ("RateLimit-Policy", policy_value)]
    if legacy:
        policy, state = min(zip(policies, states, strict=True), key=lambda item: item[1].remaining)
        headers += [
            ("RateLimit-Limit", str(policy.quota)),
            ("RateLimit-Remaining", str(state.remaining)),
            ("RateLimit-Reset", str(seconds_up(state.reset_ms))),
        ]
    return headers


def ban_headers(
    policy: Policy, retry_s: int, limits: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """``RateLimit`` / ``RateLimit-Policy`` of a ban: its failure policy, nothing remaining.

    ``limits`` are the request's own rate-limit headers, whose items follow the ban's.
    """
    state = f"{policy.state_prefix}0;t={retry_s}"
    current = dict(limits)
    return [
        ("RateLimit", ", ".join(filter(None, (state, current.get("RateLimit"))))),
        (
            "RateLimit-Policy",
            ", ".join(filter(None, (policy.item, current.get("RateLimit-Policy")))),
        ),
    ]
