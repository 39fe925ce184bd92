"""``@rate_limited``: exact budgets, draft-10 headers, identities, buckets, windows that end."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from quart import abort, request
from quart.testing import WebsocketResponseError

from quart_api.guards import rate_limited
from tests.guards.conftest import Backend, Calls, make_app, peer, route, serving


async def test_exactly_limit_requests_pass_then_429_with_retry_after(
    rate_backend: Backend, placement: str
) -> None:
    app, _ = make_app(rate_backend)
    calls = Calls()

    async def things() -> str:
        calls()
        return "ok"

    route(app, "/things", things, [rate_limited(limit=3, minutes=1)], placement)
    async with serving(app) as client:
        statuses = [(await client.get("/things")).status_code for _ in range(3)]
        refused = await client.get("/things")
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert calls.count == 3
    # One request is earned back every 60 s / 3 = 20 s; never sooner.
    assert refused.headers["Retry-After"] == "20"
    assert refused.headers["Content-Type"] == "application/problem+json"
    body = await refused.get_json()
    assert body["status"] == 429
    assert body["title"]


async def test_ratelimit_headers_follow_draft_10(rate_backend: Backend) -> None:
    app, _ = make_app(rate_backend)

    @app.get("/things")
    @rate_limited(limit=3, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        first = await client.get("/things", headers={"X-User": "alice"})
        second = await client.get("/things", headers={"X-User": "alice"})
        refused = [await client.get("/things", headers={"X-User": "alice"}) for _ in range(2)][-1]
    # GCRA: each request owes 20 s; remaining counts whole requests still allowed.
    assert first.headers["RateLimit"] == '"ip";r=2;t=20, "user";r=2;t=20'
    assert first.headers["RateLimit-Policy"] == '"ip";q=3;w=60, "user";q=3;w=60'
    assert second.headers["RateLimit"] == '"ip";r=1;t=40, "user";r=1;t=40'
    assert "RateLimit-Limit" not in first.headers
    assert refused.status_code == 429
    assert re.fullmatch(r'"ip";r=0;t=(59|60), "user";r=0;t=(59|60)', refused.headers["RateLimit"])
    assert refused.headers["RateLimit-Policy"] == first.headers["RateLimit-Policy"]


async def test_a_views_own_ratelimit_header_is_replaced_and_its_others_kept(
    rate_backend: Backend,
) -> None:
    """A view cannot answer with a RateLimit header the guard did not compute."""
    app, _ = make_app(rate_backend)

    @app.get("/things")
    @rate_limited(limit=3, minutes=1)
    async def things() -> tuple[str, dict[str, str]]:
        return "ok", {"ratelimit": '"ip";r=999;t=1', "X-Other": "kept"}

    async with serving(app) as client:
        response = await client.get("/things")
    assert response.headers.getlist("RateLimit") == ['"ip";r=2;t=20']
    assert response.headers.getlist("RateLimit-Policy") == ['"ip";q=3;w=60']
    assert response.headers["X-Other"] == "kept"


async def test_legacy_headers_are_sent_when_asked(backend: Backend) -> None:
    app, _ = make_app(backend, legacy_headers=True)

    @app.get("/things")
    @rate_limited(limit=3, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        response = await client.get("/things")
    assert response.headers["RateLimit-Limit"] == "3"
    assert response.headers["RateLimit-Remaining"] == "2"
    assert response.headers["RateLimit-Reset"] == "20"
    assert response.headers["RateLimit"] == '"ip";r=2;t=20'


async def test_constructor_argument_beats_app_config(backend: Backend) -> None:
    app, _ = make_app(backend, legacy_headers=False)
    app.config["GUARDS_LEGACY_HEADERS"] = True  # read at init_app: too late, and outranked

    @app.get("/things")
    @rate_limited(limit=3, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        response = await client.get("/things")
    assert "RateLimit-Limit" not in response.headers


async def test_each_client_ip_has_its_own_budget(rate_backend: Backend) -> None:
    app, _ = make_app(rate_backend)

    @app.get("/things")
    @rate_limited(limit=2, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        first = [(await client.get("/things", **peer("10.0.0.1"))).status_code for _ in range(3)]
        other = (await client.get("/things", **peer("10.0.0.2"))).status_code
    assert first == [200, 200, 429]
    assert other == 200


async def test_each_user_has_one_budget_across_addresses(rate_backend: Backend) -> None:
    app, _ = make_app(rate_backend)

    @app.get("/things")
    @rate_limited(limit=2, minutes=1)
    async def things() -> str:
        return "ok"

    alice = {"headers": {"X-User": "alice"}}
    async with serving(app) as client:
        from_a = [
            (await client.get("/things", **peer("10.0.0.1"), **alice)).status_code for _ in range(2)
        ]
        alice_from_b = await client.get("/things", **peer("10.0.0.2"), **alice)
        anonymous_from_b = await client.get("/things", **peer("10.0.0.2"))
        bob_from_b = await client.get("/things", **peer("10.0.0.3"), headers={"X-User": "bob"})
    assert from_a == [200, 200]
    assert alice_from_b.status_code == 429
    assert '"user";r=0' in alice_from_b.headers["RateLimit"]
    assert anonymous_from_b.status_code == 200
    assert bob_from_b.status_code == 200


async def test_buckets_are_per_route_rule_not_per_concrete_url(rate_backend: Backend) -> None:
    app, _ = make_app(rate_backend)

    @app.get("/t/<token>")
    @rate_limited(limit=2, minutes=1)
    async def share(token: str) -> str:
        return token

    async with serving(app) as client:
        statuses = [(await client.get(f"/t/{token}")).status_code for token in "abc"]
    assert statuses == [200, 200, 429]


async def test_routes_naming_one_scope_share_one_budget(rate_backend: Backend) -> None:
    app, _ = make_app(rate_backend)

    @app.get("/a")
    @rate_limited(limit=2, minutes=1, scope="search")
    async def a() -> str:
        return "a"

    @app.get("/b")
    @rate_limited(limit=2, minutes=1, scope="search")
    async def b() -> str:
        return "b"

    @app.get("/c")
    @rate_limited(limit=2, minutes=1)
    async def c() -> str:
        return "c"

    async with serving(app) as client:
        statuses = [(await client.get(path)).status_code for path in ("/a", "/b", "/a", "/c")]
        named = await client.get("/c")
    assert statuses == [200, 200, 429, 200]
    assert named.status_code == 200


async def test_cost_spends_several_units_of_the_budget(rate_backend: Backend) -> None:
    app, _ = make_app(rate_backend)

    @app.get("/export")
    @rate_limited(limit=4, minutes=1, cost=2)
    async def export() -> str:
        return "big"

    async with serving(app) as client:
        statuses = [(await client.get("/export")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_only_the_listed_methods_are_counted(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.route("/items", methods=["GET", "POST"])
    @rate_limited(limit=1, minutes=1, methods=["post"])
    async def items() -> str:
        return request.method

    async with serving(app) as client:
        reads = [(await client.get("/items")).status_code for _ in range(3)]
        writes = [(await client.post("/items")).status_code for _ in range(2)]
        read_after = await client.get("/items")
    assert reads == [200, 200, 200]
    assert writes == [200, 429]
    assert read_after.status_code == 200


async def test_exempt_requests_are_neither_counted_nor_refused(backend: Backend) -> None:
    app, _ = make_app(backend)

    def internal() -> bool:
        return request.headers.get("X-Internal") == "yes"

    @app.get("/things")
    @rate_limited(limit=1, minutes=1, exempt_when=internal)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        exempt = [
            (await client.get("/things", headers={"X-Internal": "yes"})).status_code
            for _ in range(3)
        ]
        normal = [(await client.get("/things")).status_code for _ in range(2)]
        exempt_after = await client.get("/things", headers={"X-Internal": "yes"})
    assert exempt == [200, 200, 200]
    assert normal == [200, 429]
    assert exempt_after.status_code == 200


async def test_dry_run_counts_and_reports_but_never_refuses(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/things")
    @rate_limited(limit=1, minutes=1, dry_run=True)
    async def things() -> str:
        calls()
        return "ok"

    async with serving(app) as client:
        responses = [await client.get("/things") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert calls.count == 3
    assert responses[-1].headers["RateLimit"].startswith('"ip";r=0;')


async def test_custom_key_replaces_ip_and_user(rate_backend: Backend) -> None:
    app, _ = make_app(rate_backend)

    def api_key() -> str | None:
        return request.headers.get("X-Api-Key")

    @app.get("/things")
    @rate_limited(limit=1, minutes=1, key=api_key)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        first = await client.get("/things", headers={"X-Api-Key": "k1"}, **peer("10.0.0.1"))
        same_key_elsewhere = await client.get(
            "/things", headers={"X-Api-Key": "k1"}, **peer("10.0.0.2")
        )
        other_key = await client.get("/things", headers={"X-Api-Key": "k2"}, **peer("10.0.0.1"))
    assert first.status_code == 200
    assert first.headers["RateLimit-Policy"] == '"key";q=1;w=60'
    assert same_key_elsewhere.status_code == 429
    assert other_key.status_code == 200


async def test_two_limits_on_one_view_keep_separate_budgets(rate_backend: Backend) -> None:
    app, _ = make_app(rate_backend)

    @app.get("/things")
    @rate_limited(limit=5, minutes=1)
    @rate_limited(limit=2, minutes=60)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        responses = [await client.get("/things") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429], "the hourly limit refuses"
    policies = responses[0].headers["RateLimit-Policy"].split(", ")
    assert len(policies) == 2
    assert len({p.split(";")[0] for p in policies}) == 2, "policy names must differ"
    assert {p.split(";", 1)[1] for p in policies} == {"q=2;w=3600", "q=5;w=60"}


async def test_bare_rate_limited_allows_60_a_minute(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/things")
    @rate_limited
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        first = await client.get("/things")
        statuses = [(await client.get("/things")).status_code for _ in range(60)]
    assert first.headers["RateLimit-Policy"] == '"ip";q=60;w=60'
    assert statuses == [200] * 59 + [429]


async def test_websocket_handshake_is_limited(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app(backend)

    @app.websocket("/ws")
    @rate_limited(limit=1, minutes=1)
    async def ws() -> None:
        from quart import websocket

        await websocket.accept()
        await websocket.send("hello")

    async with serving(app) as client:
        async with client.websocket("/ws") as socket:
            assert await socket.receive() == "hello"
        with pytest.raises(WebsocketResponseError) as refused:
            async with client.websocket("/ws") as socket:
                await socket.receive()
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"] == "60"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], "a websocket view returns no response to make"


async def test_client_under_the_rate_is_never_limited(rate_backend: Backend) -> None:
    """A window must end: 2 per 0.2 s, called every 0.12 s for ~5 windows, never refused."""
    app, _ = make_app(rate_backend)

    @app.get("/steady")
    @rate_limited(limit=2, seconds=0.2)
    async def steady() -> str:
        return "ok"

    @app.get("/burst")
    @rate_limited(limit=2, seconds=0.2)
    async def burst() -> str:
        return "ok"

    async with serving(app) as client:
        steady_statuses = []
        for _ in range(9):
            steady_statuses.append((await client.get("/steady")).status_code)
            await asyncio.sleep(0.12)
        burst_statuses = [(await client.get("/burst")).status_code for _ in range(3)]
    assert steady_statuses == [200] * 9
    assert burst_statuses == [200, 200, 429]


async def test_guards_enabled_false_switches_every_guard_off(backend: Backend) -> None:
    app, _ = make_app(backend, enabled=False)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        responses = [await client.get("/things") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "RateLimit" not in responses[0].headers


async def test_guards_enabled_is_read_from_app_config(backend: Backend) -> None:
    from quart import Quart

    from quart_api.guards import Guards

    app = Quart(__name__)
    app.config.update(
        GUARDS_ENABLED=False,
        REDIS_URL=backend.redis_url,
        MEMCACHED_SERVERS=backend.memcached_servers,
    )
    Guards(app)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        statuses = [(await client.get("/things")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


async def test_reset_clears_every_counter(rate_backend: Backend) -> None:
    app, guards = make_app(rate_backend)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        before = [(await client.get("/things")).status_code for _ in range(2)]
        await guards.reset(app)
        after = (await client.get("/things")).status_code
    assert before == [200, 429]
    assert after == 200


async def test_stores_connect_lazily_without_before_serving(backend: Backend) -> None:
    """``app.test_client()`` alone (no ``test_app``, no ``before_serving``) is guarded."""
    app, _ = make_app(backend)

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    async def things() -> str:
        return "ok"

    client = app.test_client()
    try:
        statuses = [(await client.get("/things")).status_code for _ in range(2)]
    finally:
        for after_serving in app.after_serving_funcs:  # close what was opened lazily
            await after_serving()
    assert statuses == [200, 429]


async def test_concurrent_burst_gets_exactly_limit_through(rate_backend: Backend) -> None:
    """Counted atomically on the server: a burst never slips past the limit."""
    app, _ = make_app(rate_backend)
    calls = Calls()

    @app.get("/things")
    @rate_limited(limit=5, minutes=1)
    async def things() -> str:
        calls()
        return "ok"

    async with serving(app) as client:
        responses = await asyncio.gather(*(client.get("/things") for _ in range(40)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 35
    assert calls.count == 5


async def test_error_responses_of_a_limited_route_carry_the_headers(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/items/<name>")
    @rate_limited(limit=3, minutes=1)
    async def item(name: str) -> str:
        abort(404)

    async with serving(app) as client:
        missing = await client.get("/items/nope")
    assert missing.status_code == 404
    assert missing.headers["RateLimit"] == '"ip";r=2;t=20'
    assert missing.headers["RateLimit-Policy"] == '"ip";q=3;w=60'


async def test_empty_custom_key_counts_by_address_and_warns_once(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app(backend)

    @app.get("/things")
    @rate_limited(limit=2, minutes=1, key=lambda: request.headers.get("X-Api-Key"))
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        statuses = [(await client.get("/things")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429], "no key: one budget for the address, never none"
    warnings = [r for r in caplog.records if "empty identity" in r.getMessage()]
    assert len(warnings) == 1


async def test_one_guards_instance_serves_two_apps(backend: Backend) -> None:
    """Per-app state lives in ``app.extensions``: the second app's settings stay its own."""
    from quart import Quart

    from quart_api.guards import Guards

    guards = Guards(redis_url=backend.redis_url, memcached_servers=backend.memcached_servers)
    apps = [Quart(__name__), Quart(__name__)]
    apps[0].config["GUARDS_LEGACY_HEADERS"] = True
    for app in apps:
        guards.init_app(app)

        @app.get("/things")
        @rate_limited(limit=3, minutes=1)
        async def things() -> str:
            return "ok"

    async with serving(apps[0]) as first, serving(apps[1]) as second:
        legacy = await first.get("/things")
        plain = await second.get("/things")
    assert legacy.headers["RateLimit-Limit"] == "3"
    assert "RateLimit-Limit" not in plain.headers


async def test_unguarded_routes_are_left_untouched(backend: Backend) -> None:
    """Only marked views are wrapped, and no app-wide hook stays behind to tax the rest."""
    app, _ = make_app(backend)

    async def plain() -> str:
        return "plain"

    app.get("/plain")(plain)

    @app.get("/limited")
    @rate_limited(limit=5, minutes=1)
    async def limited() -> str:
        return "ok"

    async with serving(app) as client:
        await client.get("/plain")
        await client.get("/limited")
    assert app.view_functions["plain"] is plain
    assert app.view_functions["limited"] is not limited
    assert app.view_functions["limited"].__wrapped__ is limited  # functools.wraps
    assert app.before_request_funcs.get(None, []) == []


async def test_limit_named_by_config_is_read_at_start_up(backend: Backend) -> None:
    app, _ = make_app(backend)
    app.config["SEARCH_RATE_LIMIT"] = "2/minute"

    @app.get("/search")
    @rate_limited(limit=100, minutes=1, config="SEARCH_RATE_LIMIT")
    async def search() -> str:
        return "ok"

    @app.get("/fallback")
    @rate_limited(limit=1, minutes=1, config="UNSET_RATE_LIMIT")
    async def fallback() -> str:
        return "ok"

    async with serving(app) as client:
        configured = [(await client.get("/search")).status_code for _ in range(3)]
        fallback_statuses = [(await client.get("/fallback")).status_code for _ in range(2)]
    assert configured == [200, 200, 429]
    assert fallback_statuses == [200, 429], "an unset key keeps the written limit"


async def test_bad_configured_limit_fails_at_start_up_naming_it(backend: Backend) -> None:
    from quart.testing.app import LifespanError

    app, _ = make_app(backend)
    app.config["SEARCH_RATE_LIMIT"] = "lots"

    @app.get("/search")
    @rate_limited(config="SEARCH_RATE_LIMIT")
    async def search() -> str:
        return "ok"

    # The test app reports a start-up error as LifespanError; hypercorn refuses to start.
    with pytest.raises(LifespanError, match=r"SEARCH_RATE_LIMIT.*'lots' is not a rate"):
        async with serving(app):
            pass


async def test_a_refused_request_charges_none_of_its_limits(rate_backend: Backend) -> None:
    """All-or-nothing: spent by the IP limit, the request costs the user's budget nothing.

    In a cluster the IP key ({ip} tag) and the user key ({u:...} tag) live in
    different slots; the store refunds the charged slot when another refuses.
    """
    app, _ = make_app(rate_backend)

    @app.get("/things")
    @rate_limited(limit=2, minutes=1)
    async def things() -> str:
        return "ok"

    alice = {"X-User": "alice"}
    async with serving(app) as client:
        for _ in range(2):
            await client.get("/things", **peer("10.0.0.1"))  # spends 10.0.0.1's budget
        refused = [
            (await client.get("/things", headers=alice, **peer("10.0.0.1"))).status_code
            for _ in range(3)
        ]
        elsewhere = [
            (await client.get("/things", headers=alice, **peer("10.0.0.2"))).status_code
            for _ in range(3)
        ]
    assert refused == [429, 429, 429]
    assert elsewhere == [200, 200, 429], "alice's two requests were never charged"
