"""What ``make bench`` measures: the apps it serves and the routes it loads.

Kept apart from the harness so the list reads in one screen: adding a route (or a
peer) is one entry here and, if it needs one, one factory in ``bench/apps.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["APPS", "ROUTES", "AppSpec", "Route"]


@dataclass(frozen=True, slots=True)
class AppSpec:
    """One hypercorn process: its factory, the path that says it is up, what it imports."""

    name: str
    target: str
    ready_path: str
    needs: str | None = None  # a module from the `bench` extra (the peers)


@dataclass(frozen=True, slots=True)
class Route:
    """One measured route."""

    name: str
    app: str
    path: str
    bearer: bool = False  # send the admin's bearer token
    user: bool = False  # send the micro-apps' user header
    path_template: str | None = None  # varied URLs: "{n}" drawn from 1..path_range
    path_range: int = 0
    peer_of: str | None = None
    what: str = ""


APPS: dict[str, AppSpec] = {
    spec.name: spec
    for spec in (
        AppSpec("bare", "bench.apps:bare_app()", "/ok"),
        AppSpec("guards", "bench.apps:guards_app()", "/ok"),
        AppSpec("service", "bench.apps:service_app()", "/healthz"),
        AppSpec(
            "quart-rate-limiter",
            "bench.apps:quart_rate_limiter_app()",
            "/limited-ip",
            needs="quart_rate_limiter",
        ),
        AppSpec("aiocache", "bench.apps:aiocache_app()", "/cached", needs="aiocache"),
    )
}

ROUTES: tuple[Route, ...] = (
    Route("bare", "bare", "/ok", what="Quart, nothing added (the ceiling)"),
    Route(
        "bare-users-body",
        "bare",
        "/users-body",
        what="bare Quart answering a body the size of full-stack's (reference, no target)",
    ),
    Route("guards-installed", "guards", "/ok", what="Guards(app), route unguarded"),
    Route("rate_limited", "guards", "/limited", user=True, what="@rate_limited ip + user"),
    Route("cached", "guards", "/cached", what="@cached hit"),
    Route(
        "full-stack",
        "service",
        "/api/v1/users",
        bearer=True,
        what="GET /api/v1/users: token + scope + rate_limited + cached hit",
    ),
    Route(
        "db-uncached",
        "service",
        "/bench/users-uncached",
        bearer=True,
        path_template="/bench/users-uncached?page={n}",
        path_range=50,
        what="the same list without @cached, pages 1-50",
    ),
    Route(
        "quart-rate-limiter",
        "quart-rate-limiter",
        "/limited",
        user=True,
        peer_of="rate_limited",
        what="peer: quart-rate-limiter, Redis store, ip + user",
    ),
    Route(
        "quart-rate-limiter-ip",
        "quart-rate-limiter",
        "/limited-ip",
        peer_of="rate_limited",
        what="peer: quart-rate-limiter, Redis store, ip only",
    ),
    Route(
        "aiocache",
        "aiocache",
        "/cached",
        peer_of="cached",
        what="peer: aiocache @cached on memcached, hit",
    ),
)
