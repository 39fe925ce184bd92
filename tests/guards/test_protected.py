"""``@protected``: exactly ``limit`` failures, then the block response without the view."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from quart import abort, request

from quart_api.guards import protected, rate_limited
from tests.guards.conftest import Backend, Calls, make_app, peer, route, serving


async def test_exactly_limit_failures_are_allowed(backend: Backend, placement: str) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    async def lookup(token: str) -> tuple[str, int]:
        calls()
        return "no such token", 404

    route(app, "/share/<token>", lookup, [protected(limit=3, minutes=60)], placement)
    async with serving(app) as client:
        failures = [await client.get(f"/share/guess{i}") for i in range(3)]
        blocked = await client.get("/share/guess3")
    assert [r.status_code for r in failures] == [404, 404, 404]
    assert calls.count == 3
    assert blocked.status_code == 404
    assert blocked.headers["Content-Type"] == "application/problem+json"
    assert calls.count == 3, "a banned client must never reach the view"


async def test_raised_not_found_counts_as_a_failure(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/items/<name>")
    @protected(limit=2, minutes=60)
    async def item(name: str) -> str:
        calls()
        abort(404)

    async with serving(app) as client:
        statuses = [(await client.get(f"/items/{i}")).status_code for i in range(4)]
    assert statuses == [404, 404, 404, 404]
    assert calls.count == 2


async def test_configured_statuses_count_and_block_status_answers(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.post("/login")
    @protected(limit=2, minutes=60, statuses={401}, block_status=429)
    async def login() -> tuple[str, int]:
        calls()
        return "", int(request.args["status"])

    async with serving(app) as client:
        not_counted = [(await client.post("/login?status=404")).status_code for _ in range(3)]
        counted = [(await client.post("/login?status=401")).status_code for _ in range(2)]
        blocked = await client.post("/login?status=200")
    assert not_counted == [404, 404, 404]
    assert counted == [401, 401]
    assert blocked.status_code == 429
    assert blocked.headers["Content-Type"] == "application/problem+json"
    assert int(blocked.headers["Retry-After"]) > 3500
    assert calls.count == 5


async def test_successes_never_ban(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/things")
    @protected(limit=1, minutes=60)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        statuses = [(await client.get("/things")).status_code for _ in range(5)]
    assert statuses == [200] * 5


async def test_reset_on_success_forgets_earlier_failures(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.post("/login")
    @protected(limit=3, minutes=60, statuses={401}, reset_on_success=True)
    async def login() -> tuple[str, int]:
        return "", 200 if request.args.get("ok") else 401

    async with serving(app) as client:
        before = [(await client.post("/login")).status_code for _ in range(2)]
        success = (await client.post("/login?ok=1")).status_code
        after = [(await client.post("/login")).status_code for _ in range(3)]
        blocked = (await client.post("/login?ok=1")).status_code
    assert before == [401, 401]
    assert success == 200
    assert after == [401, 401, 401], "failures before the success no longer count"
    assert blocked == 404


async def test_without_reset_on_success_failures_add_up(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.post("/login")
    @protected(limit=3, minutes=60, statuses={401})
    async def login() -> tuple[str, int]:
        return "", 200 if request.args.get("ok") else 401

    async with serving(app) as client:
        statuses = [
            (await client.post(path)).status_code
            for path in ("/login", "/login", "/login?ok=1", "/login", "/login?ok=1")
        ]
    assert statuses == [401, 401, 200, 401, 404]


async def test_bans_are_per_address_and_per_endpoint(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/a/<x>")
    @protected(limit=1, minutes=60)
    async def a(x: str) -> tuple[str, int]:
        return "a", 200 if x == "ok" else 404

    @app.get("/b/<x>")
    @protected(limit=1, minutes=60)
    async def b(x: str) -> tuple[str, int]:
        return "b", 200 if x == "ok" else 404

    async with serving(app) as client:
        await client.get("/a/bad", **peer("10.0.0.1"))
        banned = await client.get("/a/ok", **peer("10.0.0.1"))
        other_address = await client.get("/a/ok", **peer("10.0.0.2"))
        other_endpoint = await client.get("/b/ok", **peer("10.0.0.1"))
    assert banned.status_code == 404
    assert other_address.status_code == 200
    assert other_endpoint.status_code == 200


async def test_ban_ends_when_the_window_passes(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/x/<v>")
    @protected(limit=1, seconds=0.4)
    async def x(v: str) -> tuple[str, int]:
        return v, 200 if v == "ok" else 404

    async with serving(app) as client:
        await client.get("/x/bad")
        during = await client.get("/x/ok")
        await asyncio.sleep(0.5)
        after = await client.get("/x/ok")
    assert during.status_code == 404
    assert after.status_code == 200


async def test_repeat_offences_double_the_ban(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/x/<v>")
    @protected(limit=1, seconds=0.3, escalate=True, max_ban=timedelta(seconds=10))
    async def x(v: str) -> tuple[str, int]:
        return v, 200 if v == "ok" else 404

    async with serving(app) as client:
        await client.get("/x/bad")  # first offence: banned for 0.3 s
        await asyncio.sleep(0.4)
        assert (await client.get("/x/ok")).status_code == 200
        await client.get("/x/bad")  # second offence: banned for 0.6 s
        await asyncio.sleep(0.4)
        still_banned = await client.get("/x/ok")
        await asyncio.sleep(0.3)
        released = await client.get("/x/ok")
    assert still_banned.status_code == 404
    assert released.status_code == 200


async def test_unban_lets_one_address_back_in(backend: Backend) -> None:
    app, guards = make_app(backend)

    @app.get("/x/<v>")
    @protected(limit=1, minutes=60)
    @rate_limited(limit=100, minutes=1)
    async def x(v: str) -> tuple[str, int]:
        return v, 200 if v == "ok" else 404

    async with serving(app) as client:
        for address in ("10.0.0.1", "10.0.0.2"):
            await client.get("/x/bad", **peer(address))
        await guards.unban("10.0.0.1", app)
        unbanned = await client.get("/x/ok", **peer("10.0.0.1"))
        still_banned = await client.get("/x/ok", **peer("10.0.0.2"))
    assert unbanned.status_code == 200
    assert still_banned.status_code == 404


async def test_bare_protected_allows_ten_failures(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/x")
    @protected
    async def x() -> tuple[str, int]:
        calls()
        return "", 404

    async with serving(app) as client:
        for _ in range(11):
            await client.get("/x")
    assert calls.count == 10


async def test_unrouted_probes_get_the_prober_banned(backend: Backend) -> None:
    app, _ = make_app(backend, protect_unrouted=(3, 60))
    calls = Calls()

    @app.get("/things")
    @protected(limit=5, minutes=60)
    async def things() -> str:
        calls()
        return "ok"

    async with serving(app) as client:
        probes = [(await client.get(f"/wp-admin/{i}.php")).status_code for i in range(3)]
        blocked = await client.get("/things")
        bystander = await client.get("/things", **peer("10.0.0.9"))
    assert probes == [404, 404, 404]
    assert blocked.status_code == 404
    assert bystander.status_code == 200
    assert calls.count == 1, "the prober never reached the guarded view"
