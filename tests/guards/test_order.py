"""Decorator order is irrelevant: a cache hit never bypasses a limit, a ban or a pre-check."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from quart import request
from werkzeug.exceptions import Forbidden

from quart_api.guards import cached, precheck, protected, rate_limited
from tests.guards.conftest import Backend, Calls, make_app, peer, route, serving


def needs_read_scope() -> None:
    if request.headers.get("X-Scope") != "read":
        raise Forbidden("needs scope read")


def _orders(*decorators: Callable[[Any], Any]) -> list[Any]:
    return [
        pytest.param(list(p), id="-".join(_name(d) for d in p))
        for p in itertools.permutations(decorators)
    ]


def _name(decorator: Callable[[Any], Any]) -> str:
    return str(getattr(decorator, "label", "?"))


def _labelled(label: str, decorator: Callable[[Any], Any]) -> Callable[[Any], Any]:
    decorator.label = label  # type: ignore[attr-defined]
    return decorator


LIMIT = _labelled("rate_limited", rate_limited(limit=2, minutes=1))
PROTECT = _labelled("protected", protected(limit=1, minutes=60))
CACHE = _labelled("cached", cached(minutes=5))
PRECHECK = _labelled("precheck", precheck(needs_read_scope))


@pytest.mark.parametrize("decorators", _orders(LIMIT, CACHE))
async def test_cache_hit_never_bypasses_a_rate_limit(
    backend: Backend, placement: str, decorators: list[Any]
) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    async def things() -> str:
        calls()
        return "ok"

    route(app, "/things", things, decorators, placement)
    async with serving(app) as client:
        responses = [await client.get("/things") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[1].headers["X-Cache"] == "hit"
    assert "RateLimit" in responses[1].headers, "a hit still reports the limit"
    assert calls.count == 1


@pytest.mark.parametrize("decorators", _orders(PROTECT, CACHE))
async def test_cache_hit_never_bypasses_a_ban(
    backend: Backend, placement: str, decorators: list[Any]
) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    async def item(name: str) -> tuple[str, int]:
        calls()
        return name, 200 if name == "real" else 404

    route(app, "/items/<name>", item, decorators, placement)
    async with serving(app) as client:
        cached_ok = [(await client.get("/items/real")).headers.get("X-Cache") for _ in range(2)]
        await client.get("/items/guess")  # the one failure allowed: now banned
        banned = await client.get("/items/real")
    assert cached_ok == ["miss", "hit"]
    assert banned.status_code == 404
    assert "X-Cache" not in banned.headers
    assert calls.count == 2


@pytest.mark.parametrize("decorators", _orders(PRECHECK, CACHE))
async def test_cache_hit_never_bypasses_a_precheck(
    backend: Backend, placement: str, decorators: list[Any]
) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    async def secret() -> str:
        calls()
        return "secret"

    route(app, "/secret", secret, decorators, placement)
    async with serving(app) as client:
        allowed = [await client.get("/secret", headers={"X-Scope": "read"}) for _ in range(2)]
        refused = await client.get("/secret")
    assert [r.headers["X-Cache"] for r in allowed] == ["miss", "hit"]
    assert refused.status_code == 403
    assert calls.count == 1


LIMIT3 = _labelled("rate_limited", rate_limited(limit=3, minutes=1))


@pytest.mark.parametrize("decorators", _orders(LIMIT3, PROTECT, CACHE, PRECHECK))
async def test_every_order_gives_the_same_answers(decorators: list[Any]) -> None:
    """All 24 orders of the four guards, on the memory stores (order is not a store matter)."""
    app, _ = make_app(Backend("memory", None, None))
    calls = Calls()

    async def item(name: str) -> tuple[str, int]:
        calls()
        return name, 200 if name == "real" else 404

    route(app, "/items/<name>", item, decorators)
    scope = {"X-Scope": "read"}
    async with serving(app) as client:
        scanner = [
            (await client.get("/items/real")).status_code,  # pre-check refuses
            (await client.get("/items/real", headers=scope)).status_code,  # miss: stored
            (await client.get("/items/guess", headers=scope)).status_code,  # failure: ban
            (await client.get("/items/real", headers=scope)).status_code,  # a hit, but banned
        ]
        other = [
            await client.get("/items/real", headers=scope, **peer("10.0.0.2")) for _ in range(4)
        ]
    assert scanner == [403, 200, 404, 404]
    assert [r.status_code for r in other] == [200, 200, 200, 429]
    assert [r.headers.get("X-Cache") for r in other[:3]] == ["hit"] * 3
    assert calls.count == 2


def _refusing_loader(guards: Any) -> None:
    """A user loader that refuses a bad credential, as the service's does (401)."""
    from werkzeug.exceptions import Unauthorized

    @guards.user_loader
    def load() -> str | None:
        if request.headers.get("Authorization") == "Bearer bad":
            raise Unauthorized("bad token")
        return request.headers.get("X-User")


async def test_a_refused_credential_never_reaches_a_per_user_cached_view(
    backend: Backend,
) -> None:
    app, guards = make_app(backend)
    _refusing_loader(guards)
    calls = Calls()

    @app.get("/mine")
    @cached(minutes=5, unique_per_user=True)
    async def mine() -> str:
        calls()
        return "private"

    async with serving(app) as client:
        response = await client.get("/mine", headers={"Authorization": "Bearer bad"})
    assert response.status_code == 401
    assert calls.count == 0


async def test_a_refused_credential_is_still_charged_to_its_ip(backend: Backend) -> None:
    app, guards = make_app(backend)
    _refusing_loader(guards)
    calls = Calls()

    @app.get("/things")
    @rate_limited(limit=2, minutes=1)
    async def things() -> str:
        calls()
        return "ok"

    async with serving(app) as client:
        statuses = [
            (await client.get("/things", headers={"Authorization": "Bearer bad"})).status_code
            for _ in range(4)
        ]
    assert statuses == [401, 401, 429, 429]
    assert calls.count == 0


async def test_an_http_error_raised_by_a_guarded_view_reaches_the_apps_handler_as_raised(
    backend: Backend,
) -> None:
    """The app's handler reads the error's cause (e.g. which backend failed): it is kept."""
    from werkzeug.exceptions import ServiceUnavailable

    app, _ = make_app(backend)
    seen: list[BaseException | None] = []

    @app.errorhandler(ServiceUnavailable)
    async def unavailable(error: ServiceUnavailable) -> tuple[str, int]:
        seen.append(error.__cause__)
        return "down", 503

    @app.get("/things")
    @rate_limited(limit=5, minutes=1)
    @cached(minutes=1)
    async def things() -> str:
        try:
            raise ConnectionRefusedError("the database said no")
        except ConnectionRefusedError as refused:
            raise ServiceUnavailable() from refused

    async with serving(app) as client:
        response = await client.get("/things")
    assert response.status_code == 503
    assert "RateLimit" in response.headers
    assert isinstance(seen[0], ConnectionRefusedError)
