"""The Flask-Limiter / quart-rate-limiter / Rack::Attack parity API, through HTTP.

Rate strings, default limits, blueprint limits, ``@exempt``, ``on_breach``, and the
static safelist and blocklist of networks; each on memory and on real servers.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from quart import Blueprint, Quart, abort, request

from quart_api.guards import (
    Breach,
    ConfigurationError,
    cached,
    exempt,
    precheck,
    protected,
    rate_limited,
)
from tests.guards.conftest import Backend, Calls, make_app, peer, serving


async def _statuses(client: Any, path: str, n: int, **options: Any) -> list[int]:
    return [(await client.get(path, **options)).status_code for _ in range(n)]


# -- rate strings -----------------------------------------------------------------


async def test_a_rate_string_limits_like_limit_and_minutes(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/things")
    @rate_limited("2/minute")
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        statuses = await _statuses(client, "/things", 3)
        last = await client.get("/things")
    assert statuses == [200, 200, 429]
    assert last.headers["RateLimit-Policy"] == '"ip";q=2;w=60'


async def test_several_rates_in_one_string_each_limit(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/things")
    @rate_limited("3/second, 4/hour")
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        first = await client.get("/things")
        burst = await _statuses(client, "/things", 3)
    assert first.headers["RateLimit-Policy"] == '"ip-1s";q=3;w=1, "ip-3600s";q=4;w=3600'
    assert burst == [200, 200, 429], "the per-second limit refuses the 4th in a second"


# -- default limits and @exempt -----------------------------------------------------


def _default_app(
    backend: Backend, config: dict[str, Any] | None = None, **options: Any
) -> tuple[Quart, dict[str, Calls]]:
    app, _ = make_app(backend, config, **options)
    calls = {name: Calls() for name in ("plain", "own", "free", "cached")}

    @app.get("/plain")
    async def plain() -> str:
        calls["plain"]()
        return "plain"

    @app.get("/own")
    @rate_limited(limit=5, minutes=1)
    async def own() -> str:
        calls["own"]()
        return "own"

    @app.get("/free")
    @exempt
    async def free() -> str:
        calls["free"]()
        return "free"

    @app.get("/cached")
    @cached(minutes=1)
    async def cached_view() -> str:
        calls["cached"]()
        return "cached"

    return app, calls


@pytest.mark.parametrize("how", ["config", "argument"])
async def test_default_limits_cover_routes_without_their_own(backend: Backend, how: str) -> None:
    if how == "config":
        app, calls = _default_app(backend, {"GUARDS_DEFAULT_LIMITS": "2/minute"})
    else:
        app, calls = _default_app(backend, default_limits="2/minute")
    async with serving(app) as client:
        plain = await _statuses(client, "/plain", 3)
        own = await _statuses(client, "/own", 3)
        free = await _statuses(client, "/free", 5)
        cached_hits = await _statuses(client, "/cached", 3)
    assert plain == [200, 200, 429]
    assert calls["plain"].count == 2
    assert own == [200, 200, 200], "a route's own @rate_limited replaces the default"
    assert free == [200] * 5, "@exempt keeps the default limits off"
    assert cached_hits == [200, 200, 429], "a cache hit never bypasses the default limit"


async def test_default_limits_count_per_ip_and_per_user(backend: Backend) -> None:
    app, _ = _default_app(backend, default_limits="2/minute")
    alice = {"X-User": "alice"}
    async with serving(app) as client:
        await client.get("/plain", headers=alice, **peer("10.0.0.1"))
        await client.get("/plain", headers=alice, **peer("10.0.0.2"))
        moved = await client.get("/plain", headers=alice, **peer("10.0.0.3"))
        stranger = await client.get("/plain", **peer("10.0.0.3"))
    assert moved.status_code == 429, "a user's budget follows them across addresses"
    assert moved.headers["RateLimit-Policy"] == '"ip";q=2;w=60, "user";q=2;w=60'
    assert stranger.status_code == 200


async def test_without_default_limits_unguarded_routes_are_not_wrapped(backend: Backend) -> None:
    app, _ = _default_app(backend)
    plain = app.view_functions["plain"]
    async with serving(app) as client:
        await client.get("/plain")
    assert app.view_functions["plain"] is plain, "an unguarded route must cost nothing"
    assert app.view_functions["own"] is not None


async def test_default_limits_leave_static_files_alone(backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "app.css").write_text("body {}")
    app = Quart(__name__, static_folder=str(tmp_path), static_url_path="/static")
    from quart_api.guards import Guards

    Guards(
        app,
        redis_url=backend.redis_url,
        memcached_servers=backend.memcached_servers,
        default_limits="1/minute",
    )
    async with serving(app) as client:
        statuses = await _statuses(client, "/static/app.css", 3)
    assert statuses == [200, 200, 200]


async def test_a_bad_default_limit_fails_at_start_up_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="GUARDS_DEFAULT_LIMITS"):
        make_app(Backend("memory", None, None), default_limits="300/fortnight")


# -- blueprint limits ------------------------------------------------------------------


def _blueprint_app(backend: Backend, **options: Any) -> tuple[Quart, Calls]:
    app, guards = make_app(backend, **options)
    calls = Calls()
    api = Blueprint("api", __name__)

    @api.get("/a")
    async def route_a() -> str:
        calls()
        return "a"

    @api.get("/b/<name>")
    async def route_b(name: str) -> str:
        return name

    @api.get("/own")
    @rate_limited(limit=5, minutes=1)
    async def own() -> str:
        return "own"

    @api.get("/free")
    @exempt
    async def free() -> str:
        return "free"

    @app.get("/outside")
    async def outside() -> str:
        return "outside"

    guards.limit_blueprint(api, "2/minute")
    app.register_blueprint(api, url_prefix="/api", name="v1")
    return app, calls


async def test_a_blueprint_limit_gives_each_of_its_routes_a_budget(backend: Backend) -> None:
    app, calls = _blueprint_app(backend)
    async with serving(app) as client:
        a = await _statuses(client, "/api/a", 3)
        b = [(await client.get(f"/api/b/{n}")).status_code for n in range(3)]
        own = await _statuses(client, "/api/own", 3)
        free = await _statuses(client, "/api/free", 4)
        outside = await _statuses(client, "/outside", 4)
    assert a == [200, 200, 429]
    assert calls.count == 2
    assert b == [200, 200, 429], "one budget per route rule, whatever the path values"
    assert own == [200, 200, 200]
    assert free == [200] * 4
    assert outside == [200] * 4


async def test_a_blueprint_limit_takes_the_place_of_the_default_limits(backend: Backend) -> None:
    app, _ = _blueprint_app(backend, default_limits="1/minute")
    async with serving(app) as client:
        inside = await _statuses(client, "/api/a", 3)
        outside = await _statuses(client, "/outside", 2)
    assert inside == [200, 200, 429]
    assert outside == [200, 429]


def test_limit_blueprint_refuses_a_bad_rate_naming_the_blueprint() -> None:
    _, guards = make_app(Backend("memory", None, None))
    with pytest.raises(ConfigurationError, match="'api'"):
        guards.limit_blueprint(Blueprint("api", __name__), "ten a minute")


# -- on_breach ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_on_breach_hears_of_every_429_with_what_refused_it(
    backend: Backend, kind: str
) -> None:
    breaches: list[Breach] = []

    def sync_hook(info: Breach) -> None:
        breaches.append(info)

    async def async_hook(info: Breach) -> None:
        await asyncio.sleep(0)
        breaches.append(info)

    app, _ = make_app(backend, on_breach=sync_hook if kind == "sync" else async_hook)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        await client.get("/things", headers={"X-User": "alice"}, **peer("192.0.2.7"))
        refused = await client.get("/things", headers={"X-User": "alice"}, **peer("192.0.2.8"))
    assert refused.status_code == 429
    assert breaches == [
        Breach(
            endpoint="things",
            policy="user",
            limit=1,
            window=60,
            key_kind="user",
            retry_after=int(refused.headers["Retry-After"]),
            client="192.0.2.8",
        )
    ]


async def test_on_breach_hears_of_a_protected_429_block(backend: Backend) -> None:
    breaches: list[Breach] = []
    app, _ = make_app(backend, on_breach=breaches.append)

    @app.post("/login")
    @protected(limit=1, minutes=60, statuses={401}, block_status=429)
    async def login() -> tuple[str, int]:
        return "", 401

    async with serving(app) as client:
        await client.post("/login")
        blocked = await client.post("/login")
    assert blocked.status_code == 429
    assert [(b.key_kind, b.policy, b.limit, b.window) for b in breaches] == [
        ("failures", "failures", 1, 3600)
    ]


async def test_a_failing_on_breach_hook_is_logged_once_and_never_breaks_the_429(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(info: Breach) -> None:
        raise RuntimeError("the alerting system is down")

    app, _ = make_app(backend, on_breach=broken)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    caplog.set_level(logging.WARNING, "quart_api.guards")
    async with serving(app) as client:
        await client.get("/things")
        refused = await _statuses(client, "/things", 3)
    assert refused == [429, 429, 429]
    logged = [r for r in caplog.records if "on_breach" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


def test_on_breach_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_breach"):
        make_app(Backend("memory", None, None), on_breach="alert-me")


# -- safelist and blocklist ------------------------------------------------------------


def _listed_app(backend: Backend, **options: Any) -> tuple[Quart, dict[str, Calls]]:
    app, _ = make_app(backend, **options)
    calls = {name: Calls() for name in ("limited", "guess", "plain", "checked", "cached")}

    @app.get("/limited")
    @rate_limited(limit=1, minutes=1)
    async def limited() -> str:
        calls["limited"]()
        return "ok"

    @app.get("/guess/<token>")
    @protected(limit=2, minutes=60)
    async def guess(token: str) -> tuple[str, int]:
        calls["guess"]()
        return "", 404

    @app.get("/plain")
    async def plain() -> str:
        calls["plain"]()
        return "plain"

    def refuse() -> None:
        abort(403)

    @app.get("/checked")
    @rate_limited(limit=1, minutes=1)
    @precheck(refuse)
    async def checked() -> str:
        calls["checked"]()
        return "never"

    @app.get("/cached")
    @rate_limited(limit=1, minutes=1)
    @cached(minutes=1)
    async def cached_view() -> str:
        calls["cached"]()
        return "cached"

    return app, calls


async def test_a_safelisted_client_skips_limits_and_bans(backend: Backend) -> None:
    app, calls = _listed_app(backend, safelist="10.1.0.0/16, 2001:db8::/32")
    office, v6 = peer("10.1.2.3"), peer("2001:db8::5")
    async with serving(app) as client:
        limited = await _statuses(client, "/limited", 4, **office)
        guesses = [(await client.get(f"/guess/{n}", **v6)).status_code for n in range(5)]
        stranger = await _statuses(client, "/limited", 2, **peer("10.2.0.1"))
    assert limited == [200] * 4
    assert calls["guess"].count == 5, "a safelisted client is never banned"
    assert guesses == [404] * 5
    assert stranger == [200, 429]


def _login_app(backend: Backend, **options: Any) -> tuple[Quart, Calls]:
    """A log-in that locks an account out after 3 failures, from any client."""
    app, _ = make_app(backend, **options)
    calls = Calls()

    @app.post("/login/<account>")
    @protected(
        limit=3,
        minutes=60,
        statuses={401},
        block_status=429,
        key=lambda: (request.view_args or {})["account"],
    )
    async def login(account: str) -> tuple[str, int]:
        calls()
        return "", 401

    return app, calls


async def test_a_safelisted_network_cannot_guess_an_accounts_password_uncounted(
    backend: Backend,
) -> None:
    """A host inside a safelisted range (a compromised office machine) meets the account's
    lock-out like anyone else: the safelist trusts the network, not its guesses."""
    app, calls = _login_app(backend, safelist="10.1.0.0/16")
    async with serving(app) as client:
        guesses = [
            (await client.post("/login/alice", **peer("10.1.2.3"))).status_code for _ in range(6)
        ]
    assert guesses == [401, 401, 401, 429, 429, 429]
    assert calls.count == 3


async def test_a_safelisted_network_has_no_lock_out_of_its_own_across_accounts(
    backend: Backend,
) -> None:
    """Behind one office address, failures on many accounts lock out no one else: the
    client's own tally is what the safelist skips."""
    app, calls = _login_app(backend, safelist="10.1.0.0/16")
    office = peer("10.1.2.3")
    async with serving(app) as client:
        statuses = [(await client.post(f"/login/user{n}", **office)).status_code for n in range(8)]
        stranger = [
            (await client.post(f"/login/other{n}", **peer("10.2.0.1"))).status_code
            for n in range(5)
        ]
    assert statuses == [401] * 8
    assert calls.count == 8 + 3
    assert stranger == [401, 401, 401, 429, 429]


async def test_a_safelisted_client_still_meets_pre_checks_and_the_cache(backend: Backend) -> None:
    app, calls = _listed_app(backend, safelist="10.1.0.0/16")
    office = peer("10.1.2.3")
    async with serving(app) as client:
        checked = await client.get("/checked", **office)
        first = await client.get("/cached", **office)
        second = await client.get("/cached", **office)
    assert checked.status_code == 403
    assert calls["checked"].count == 0
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert calls["cached"].count == 1


async def test_a_blocklisted_client_gets_403_on_every_route_without_any_view(
    backend: Backend,
) -> None:
    app, calls = _listed_app(backend, blocklist=["203.0.113.0/24", "2001:db8:bad::/48"])
    async with serving(app) as client:
        answers = [
            await client.get(path, **peer(address))
            for path in ("/limited", "/guess/x", "/plain", "/no/such/path")
            for address in ("203.0.113.9", "2001:db8:bad::1", "::ffff:203.0.113.9")
        ]
        allowed = await client.get("/plain", **peer("198.51.100.1"))
    assert [r.status_code for r in answers] == [403] * 12
    assert {r.headers["Content-Type"] for r in answers} == {"application/problem+json"}
    body = await answers[0].get_json()
    assert body["status"] == 403
    assert sum(c.count for c in calls.values()) == 1  # only the allowed request's view
    assert allowed.status_code == 200


async def test_forged_forwarded_for_cannot_escape_the_blocklist(backend: Backend) -> None:
    app, calls = _listed_app(backend, blocklist="203.0.113.0/24", trusted_proxy_count=1)
    async with serving(app) as client:
        forged = await client.get(
            "/plain",
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
            **peer("10.0.0.1"),  # the proxy; the client it saw is the last hop
        )
    assert forged.status_code == 403
    assert calls["plain"].count == 0


async def test_forged_forwarded_for_cannot_claim_a_safelisted_address(backend: Backend) -> None:
    """Without trusted proxies X-Forwarded-For is ignored: the socket peer is the client."""
    app, calls = _listed_app(backend, safelist="10.1.0.0/16")
    forged = {"X-Forwarded-For": "10.1.2.3"}
    async with serving(app) as client:
        statuses = await _statuses(client, "/limited", 3, headers=forged, **peer("192.0.2.1"))
    assert statuses == [200, 429, 429]
    assert calls["limited"].count == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("safelist", "10.0.0.0/33"), ("blocklist", "not-a-network"), ("safelist", ["::ffff:1.2.3.4"])],
)
def test_a_bad_network_list_fails_at_start_up_naming_it(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"GUARDS_{option.upper()}"):
        make_app(Backend("memory", None, None), **{option: value})
