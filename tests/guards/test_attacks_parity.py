"""Attacks on the parity API (default and blueprint limits, ``@exempt``, ``on_breach``,
rate strings, the safelist and the blocklist), through HTTP on memory and real stores.

Each test names the attack it closes or the way around a guard it proves shut.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from quart import Blueprint, Quart, websocket
from quart.testing import WebsocketResponseError

from quart_api.guards import Breach, ConfigurationError, Guards, exempt, rate_limited
from quart_api.guards.config import ON_BREACH_TIMEOUT
from quart_api.guards.rates import MAX_WINDOW_MS
from tests.guards.conftest import Backend, Calls, make_app, peer, serving


async def _statuses(client: Any, path: str, n: int, **options: Any) -> list[int]:
    return [(await client.get(path, **options)).status_code for _ in range(n)]


# -- default limits: views that look like static files -------------------------------


async def test_a_view_named_static_does_not_escape_the_default_limits(backend: Backend) -> None:
    """Only the static-file view itself is left alone, not any view called ``static``."""
    app = Quart(__name__, static_folder=None)  # the "static" endpoint is free to take
    Guards(
        app,
        redis_url=backend.redis_url,
        memcached_servers=backend.memcached_servers,
        default_limits="2/minute",
    )
    calls = Calls()
    shop = Blueprint("shop", __name__)

    @app.get("/export")
    async def static() -> str:
        calls()
        return "the whole table"

    async def export() -> str:
        calls()
        return "the whole table"

    shop.add_url_rule("/export", "static", export)  # endpoint "shop.static"
    app.register_blueprint(shop, url_prefix="/shop")
    async with serving(app) as client:
        app_view = await _statuses(client, "/export", 3)
        blueprint_view = await _statuses(client, "/shop/export", 3)
    assert app_view == [200, 200, 429]
    assert blueprint_view == [200, 200, 429]
    assert calls.count == 4


async def test_static_files_of_a_blueprint_stay_free_of_the_default_limits(
    backend: Backend, tmp_path: Path
) -> None:
    (tmp_path / "app.css").write_text("body {}")
    app, _ = make_app(backend, default_limits="1/minute")
    assets = Blueprint("assets", __name__, static_folder=str(tmp_path), static_url_path="/s")
    app.register_blueprint(assets, url_prefix="/assets")
    async with serving(app) as client:
        statuses = await _statuses(client, "/assets/s/app.css", 3)
    assert statuses == [200, 200, 200]


# -- windows no store can count ----------------------------------------------------------


async def test_the_longest_window_allowed_still_counts_on_every_store(backend: Backend) -> None:
    app, _ = make_app(backend, store_timeout=1.0)

    @app.get("/once")
    @rate_limited(limit=1, seconds=MAX_WINDOW_MS / 1000)
    async def once() -> str:
        return "ok"

    async with serving(app) as client:
        statuses = await _statuses(client, "/once", 3)
    assert statuses == [200, 429, 429]


@pytest.mark.parametrize(
    "window", [{"seconds": 1e15}, {"minutes": 1e13}, {"seconds": math.inf}, {"seconds": math.nan}]
)
def test_a_window_too_long_to_count_is_refused_when_the_decorator_runs(
    window: dict[str, float],
) -> None:
    """On Redis such a window fails every check of its endpoint: the guard would fail open."""
    with pytest.raises(ValueError, match=r"@rate_limited: .*window"):
        rate_limited(limit=1, **window)


@pytest.mark.parametrize("value", [(1, 1e15), (1, math.inf), (5, 0.0001)])
def test_a_configured_window_no_store_can_count_fails_at_start_up_naming_the_key(
    value: tuple[int, float],
) -> None:
    app, guards = make_app(Backend("memory", None, None), {"LOGIN_RATE": value})

    @app.get("/login")
    @rate_limited(limit=5, config="LOGIN_RATE")
    async def login() -> str:
        return "ok"

    with pytest.raises(ConfigurationError, match="LOGIN_RATE"):
        guards.install(app)  # what the app does as it starts serving


# -- on_breach ---------------------------------------------------------------------------


async def test_a_hanging_on_breach_hook_never_holds_the_429(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """An alerting backend that never answers: each refused request still gets its 429."""
    events: list[str] = []

    async def hangs(info: Breach) -> None:
        events.append("called")
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    app, _ = make_app(backend, on_breach=hangs)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    caplog.set_level(logging.WARNING, "quart_api.guards")
    async with serving(app) as client:
        await client.get("/things")
        # bounded, so that without the deadline the test fails instead of hanging
        refused = await asyncio.wait_for(client.get("/things"), timeout=30)
    assert refused.status_code == 429
    assert events == ["called", "cancelled"]
    assert [r.getMessage() for r in caplog.records if "on_breach" in r.getMessage()] == [
        f"Guards(on_breach=...) took longer than {ON_BREACH_TIMEOUT} s and was cancelled; "
        "the 429 was answered anyway (logged once)"
    ]


async def test_an_on_breach_hook_raising_timeout_error_is_logged_as_raised(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def times_out(info: Breach) -> None:
        raise TimeoutError("the pager's own client timed out")

    app, _ = make_app(backend, on_breach=times_out)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    caplog.set_level(logging.WARNING, "quart_api.guards")
    async with serving(app) as client:
        await client.get("/things")
        refused = await client.get("/things")
    assert refused.status_code == 429
    logged = [r for r in caplog.records if "on_breach" in r.getMessage()]
    assert [r.getMessage() for r in logged] == [
        "Guards(on_breach=...) raised; the 429 was answered anyway (logged once)"
    ]
    assert logged[0].exc_info is not None


# -- the blocklist and the safelist, by address encoding ---------------------------------

#: Addresses of the blocklisted host 203.0.113.9 that only it can send from: 6to4,
#: Teredo (client 203.0.113.9 through a Teredo server), NAT64's well-known prefix.
_TUNNELS_OF_A_BLOCKED_HOST = [
    "2002:cb00:7109::1",
    "2002:cb00:7109:ffff::42",
    "2001:0:4136:e378:8000:63bf:34ff:8ef6",
    "64:ff9b::cb00:7109",
    "64:ff9b::203.0.113.9",
]


def _blocklisted_app(backend: Backend, **options: Any) -> tuple[Quart, Calls]:
    app, _ = make_app(backend, **options)
    calls = Calls()

    @app.get("/plain")
    async def plain() -> str:
        calls()
        return "plain"

    return app, calls


@pytest.mark.parametrize("address", _TUNNELS_OF_A_BLOCKED_HOST)
async def test_a_blocklisted_host_cannot_come_back_through_its_6to4_teredo_or_nat64_address(
    backend: Backend, address: str
) -> None:
    app, calls = _blocklisted_app(backend, blocklist="203.0.113.0/24")
    async with serving(app) as client:
        refused = await client.get("/plain", **peer(address))
    assert refused.status_code == 403
    assert calls.count == 0


async def test_a_proxy_reported_tunnel_address_of_a_blocklisted_host_is_refused(
    backend: Backend,
) -> None:
    app, calls = _blocklisted_app(backend, blocklist="203.0.113.0/24", trusted_proxy_count=1)
    async with serving(app) as client:
        refused = await client.get(
            "/plain", headers={"X-Forwarded-For": "2002:cb00:7109::1"}, **peer("10.0.0.1")
        )
    assert refused.status_code == 403
    assert calls.count == 0


async def test_a_tunnel_address_of_a_safelisted_host_gets_no_safelist_privilege(
    backend: Backend,
) -> None:
    """A refusal follows a host to the addresses built from it; a privilege does not."""
    app, _ = make_app(backend, safelist="192.0.2.0/24")

    @app.get("/limited")
    @rate_limited(limit=1, minutes=1)
    async def limited() -> str:
        return "ok"

    async with serving(app) as client:
        listed = await _statuses(client, "/limited", 3, **peer("192.0.2.7"))
        tunnelled = await _statuses(client, "/limited", 3, **peer("2002:c000:207::1"))
    assert listed == [200, 200, 200]
    assert tunnelled == [200, 429, 429]


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:203.0.113.9",
        "::FFFF:CB00:7109",
        "0:0:0:0:0:ffff:cb00:7109",
        "[::ffff:203.0.113.9]:443",
        "203.0.113.9:5555",
        " 203.0.113.9",
        "2001:DB8:BAD::1",
        "2001:0db8:0bad:0000::0001",
        "2001:db8:bad::1%eth0",
    ],
)
async def test_every_spelling_of_a_blocklisted_address_is_refused_behind_a_proxy(
    backend: Backend, address: str
) -> None:
    app, calls = _blocklisted_app(
        backend, blocklist="203.0.113.0/24, 2001:db8:bad::/48", trusted_proxy_count=1
    )
    async with serving(app) as client:
        refused = await client.get(
            "/plain", headers={"X-Forwarded-For": f"198.51.100.1, {address}"}, **peer("10.0.0.1")
        )
    assert refused.status_code == 403
    assert calls.count == 0


# -- rate strings that must never become a guard that allows everything ----------------

_NOT_RATES = [
    "0/hour",
    "-1/minute",
    "+5/minute",
    "99999999999999999999/day",  # more than one per microsecond
    "50/0 hours",
    "1/1e9 seconds",
    "1_000/minute",
    "\uff15/minute",  # fullwidth digit five
    "\u0665/minute",  # Arabic-Indic digit five
    "5/\u2003minute",  # em space
    "5/\u017fecond",  # long s, which case folding alone takes for "s"
    "5/fortnight",
    "5/minute,",
    "",
    " ",
]


@pytest.mark.parametrize("text", _NOT_RATES)
def test_a_malformed_rate_string_in_the_decorator_fails_when_it_runs(text: str) -> None:
    with pytest.raises(ConfigurationError, match="@rate_limited"):
        rate_limited(text)


@pytest.mark.parametrize("text", _NOT_RATES)
def test_a_malformed_default_limit_fails_at_start_up(text: str) -> None:
    with pytest.raises(ConfigurationError, match="GUARDS_DEFAULT_LIMITS"):
        make_app(Backend("memory", None, None), {"GUARDS_DEFAULT_LIMITS": text})


@pytest.mark.parametrize("text", _NOT_RATES)
def test_a_malformed_blueprint_limit_fails_when_it_is_set(text: str) -> None:
    _, guards = make_app(Backend("memory", None, None))
    with pytest.raises(ConfigurationError, match="limit_blueprint"):
        guards.limit_blueprint(Blueprint("api", __name__), text)


async def test_spaces_case_plurals_and_semicolons_read_as_the_rates_they_spell(
    backend: Backend,
) -> None:
    app, _ = make_app(backend, default_limits=" 2 / Minutes ;100/HOUR ")

    @app.get("/plain")
    async def plain() -> str:
        return "plain"

    async with serving(app) as client:
        statuses = await _statuses(client, "/plain", 3)
        last = await client.get("/plain")
    assert statuses == [200, 200, 429]
    assert last.headers["RateLimit-Policy"] == '"ip-60s";q=2;w=60, "ip-3600s";q=100;w=3600'


# -- blueprint limits: URL variants, names, order ------------------------------------------


async def test_a_blueprint_limit_set_after_serving_started_fails_instead_of_being_ignored(
    backend: Backend,
) -> None:
    app, guards = make_app(backend)
    reports = Blueprint("reports", __name__)

    @reports.get("/daily")
    async def daily() -> str:
        return "expensive"

    app.register_blueprint(reports, url_prefix="/reports")
    async with serving(app) as client:
        with pytest.raises(RuntimeError, match="limit_blueprint\\('reports'\\)"):
            guards.limit_blueprint(reports, "1/minute")
        statuses = await _statuses(client, "/reports/daily", 2)
    assert statuses == [200, 200]


def _users_app(backend: Backend) -> tuple[Quart, Calls]:
    app, guards = make_app(backend)
    calls = Calls()
    api = Blueprint("api", __name__)

    @api.route("/users/", methods=["GET", "POST"])
    async def users() -> str:
        calls()
        return "users"

    guards.limit_blueprint(api, "2/minute")
    app.register_blueprint(api, url_prefix="/api/v1")
    return app, calls


async def test_url_variants_and_methods_share_one_blueprint_budget(backend: Backend) -> None:
    """Slash, double slash, percent-encoding, HEAD and POST: one route rule, one budget;
    what routing answers itself (308, 404, 405, automatic OPTIONS) never runs the view."""
    app, calls = _users_app(backend)
    async with serving(app) as client:
        first = await client.get("/api/v1/users/")
        head = await client.head("/api/v1/users/")
        variants = {
            path: (await client.open(path, method=method)).status_code
            for method, path in [
                ("GET", "//api/v1/users/"),
                ("GET", "/api/%761/users/"),
                ("GET", "/api/v1/%75sers/"),
                ("POST", "/api/v1/users/"),
            ]
        }
        routing = [
            (await client.get("/api/v1/users")).status_code,  # 308 to the slash
            (await client.get("/api//v1/users/")).status_code,  # 308, slashes merged
            (await client.get("/API/v1/users/")).status_code,
            (await client.get("/api/v1/users/x")).status_code,
            (await client.put("/api/v1/users/")).status_code,
            (await client.options("/api/v1/users/")).status_code,
        ]
    assert (first.status_code, head.status_code) == (200, 200)
    assert set(variants.values()) == {429}, variants
    assert routing == [308, 308, 404, 404, 405, 200]
    assert calls.count == 2, "only the two admitted requests (GET, HEAD) ran the view"


async def test_fifty_concurrent_requests_admit_exactly_a_default_or_blueprint_limit(
    rate_backend: Backend,
) -> None:
    app, guards = make_app(rate_backend, default_limits="7/minute", store_timeout=1.0)
    ran = {"plain": Calls(), "report": Calls()}
    reports = Blueprint("reports", __name__)

    @app.get("/plain")
    async def plain() -> str:
        ran["plain"]()
        await asyncio.sleep(0)
        return "plain"

    @reports.get("/daily")
    async def daily() -> str:
        ran["report"]()
        await asyncio.sleep(0)
        return "daily"

    guards.limit_blueprint(reports, "5/minute")
    app.register_blueprint(reports, url_prefix="/reports")
    async with serving(app) as client:
        by_default = await asyncio.gather(*(client.get("/plain") for _ in range(50)))
        by_blueprint = await asyncio.gather(*(client.get("/reports/daily") for _ in range(50)))
    assert sorted(r.status_code for r in by_default) == [200] * 7 + [429] * 43
    assert sorted(r.status_code for r in by_blueprint) == [200] * 5 + [429] * 45
    assert (ran["plain"].count, ran["report"].count) == (7, 5)


async def test_exempt_on_one_view_does_not_free_another_of_the_same_name(
    backend: Backend,
) -> None:
    app, _ = make_app(backend, default_limits="1/minute")
    public, private = Blueprint("public", __name__), Blueprint("private", __name__)

    @public.get("/items")
    @exempt
    async def items() -> str:
        return "public items"

    @private.get("/items")  # type: ignore[no-redef]
    async def items() -> str:  # noqa: F811 (the same name, on purpose)
        return "private items"

    app.register_blueprint(public, url_prefix="/public")
    app.register_blueprint(private, url_prefix="/private")
    async with serving(app) as client:
        free = await _statuses(client, "/public/items", 3)
        limited = await _statuses(client, "/private/items", 3)
    assert free == [200, 200, 200]
    assert limited == [200, 429, 429]


# -- websockets and forged hops ----------------------------------------------------------


async def test_a_websocket_meets_the_blocklist_and_the_default_limits(backend: Backend) -> None:
    app, _ = make_app(backend, blocklist="203.0.113.0/24", default_limits="2/minute")
    opened = Calls()

    @app.websocket("/ws")
    async def ws() -> None:
        opened()
        await websocket.accept()
        await websocket.send("hi")

    async def handshake(address: str) -> int:
        try:
            async with client.websocket("/ws", **peer(address)) as socket:
                await socket.receive()
        except WebsocketResponseError as refused:
            return int(refused.response.status_code)
        return 101

    async with serving(app) as client:
        blocked = [await handshake(a) for a in ("203.0.113.9", "2002:cb00:7109::1")]
        limited = [await handshake("192.0.2.1") for _ in range(3)]
    assert blocked == [403, 403]
    assert limited == [101, 101, 429]
    assert opened.count == 2


async def test_a_forged_safelisted_hop_left_of_the_proxys_gets_no_privilege(
    backend: Backend,
) -> None:
    app, _ = make_app(backend, safelist="10.1.0.0/16", trusted_proxy_count=1)
    calls = Calls()

    @app.get("/limited")
    @rate_limited(limit=1, minutes=1)
    async def limited() -> str:
        calls()
        return "ok"

    forgeries = [
        {"X-Forwarded-For": "10.1.2.3, 192.0.2.1"},
        {"X-Forwarded-For": "10.1.2.3,192.0.2.1"},
        {"X-Forwarded-For": "10.1.2.3 ,, 192.0.2.1 "},
        [("X-Forwarded-For", "10.1.2.3"), ("X-Forwarded-For", "192.0.2.1")],
    ]
    async with serving(app) as client:
        statuses = [
            (await client.get("/limited", headers=forged, **peer("10.0.0.1"))).status_code
            for forged in forgeries
        ]
    assert statuses == [200, 429, 429, 429]
    assert calls.count == 1


async def test_a_client_both_safelisted_and_blocklisted_is_refused(backend: Backend) -> None:
    """A wide safelist (an office range) never reopens a narrower blocklist inside it."""
    app, calls = _blocklisted_app(backend, safelist="10.0.0.0/8", blocklist="10.6.6.0/24")
    async with serving(app) as client:
        refused = await client.get("/plain", **peer("10.6.6.6"))
        office = await client.get("/plain", **peer("10.1.1.1"))
    assert (refused.status_code, office.status_code) == (403, 200)
    assert calls.count == 1
