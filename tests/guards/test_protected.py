"""``@protected``: exactly ``limit`` failures, then the block response without the view."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from quart import abort, request
from werkzeug.exceptions import HTTPException

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
        unrouted = await client.get("/no/such/path")
    assert [r.status_code for r in failures] == [404, 404, 404]
    assert calls.count == 3
    assert blocked.status_code == 404
    assert await blocked.get_data() == await unrouted.get_data(), "a ban looks like any 404"
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


async def test_a_ban_in_a_plain_app_answers_like_that_apps_own_404(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.errorhandler(404)
    async def not_found(error: HTTPException) -> tuple[dict[str, str], int]:
        return {"error": "no such thing", "kind": type(error).__name__}, 404

    @app.get("/items/<name>")
    @protected(limit=1, minutes=60)
    async def item(name: str) -> tuple[str, int]:
        return "", 404

    async with serving(app) as client:
        await client.get("/items/a")
        blocked = await client.get("/items/b")
        unrouted = await client.get("/no/such/path")
    assert blocked.status_code == 404
    assert blocked.headers["Content-Type"] == unrouted.headers["Content-Type"]
    assert (
        await blocked.get_json()
        == await unrouted.get_json()
        == {
            "error": "no such thing",
            "kind": "NotFound",
        }
    )


async def test_a_429_ban_carries_retry_after_and_ratelimit_headers(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.post("/login")
    @rate_limited(limit=100, minutes=1)
    @protected(limit=2, minutes=60, statuses={401}, block_status=429)
    async def login() -> tuple[str, int]:
        return "", 401

    async with serving(app) as client:
        for _ in range(2):
            await client.post("/login")
        blocked = await client.post("/login")
    assert blocked.status_code == 429
    assert blocked.headers["Content-Type"] == "application/problem+json"
    assert 3500 < int(blocked.headers["Retry-After"]) <= 3600
    assert blocked.headers["RateLimit"].startswith('"failures";r=0;t=')
    assert blocked.headers["RateLimit-Policy"] == '"failures";q=2;w=3600, "ip";q=100;w=60'


async def test_every_429_keeps_its_headers_through_the_apps_own_error_handler(
    backend: Backend,
) -> None:
    app, _ = make_app(backend)

    @app.errorhandler(HTTPException)
    async def own_errors(error: HTTPException) -> tuple[dict[str, Any], int]:
        return {"error": error.name}, error.code or 500

    @app.post("/limited")
    @rate_limited(limit=1, minutes=1)
    async def limited() -> str:
        return "ok"

    @app.post("/banned")
    @protected(limit=1, minutes=60, statuses={401}, block_status=429)
    async def banned() -> tuple[str, int]:
        return "", 401

    async with serving(app) as client:
        await client.post("/limited")
        await client.post("/banned")
        refusals = [await client.post("/limited"), await client.post("/banned")]
    for refused in refusals:
        assert refused.status_code == 429
        assert await refused.get_json() == {"error": "Too Many Requests"}, "the app's own body"
        assert int(refused.headers["Retry-After"]) >= 1
        assert "RateLimit" in refused.headers
        assert "RateLimit-Policy" in refused.headers


# -- @protected(key=...): per client and per key -------------------------------------


def _keyed_app(backend: Backend, limit: int = 3, **options: Any) -> tuple[Any, Calls]:
    """``POST /login?user=..&status=..``: key = the user, 401 counts, 429 blocks."""
    app, _ = make_app(backend, **options)
    calls = Calls()

    @app.post("/login")
    @protected(
        limit=limit,
        minutes=60,
        statuses={401},
        block_status=429,
        reset_on_success=True,
        key=lambda: request.args.get("user"),
        block_detail="Too many failed logins.",
    )
    async def login() -> tuple[str, int]:
        calls()
        await asyncio.sleep(0)
        if request.args.get("status") == "raise":
            raise RuntimeError("the view broke")
        return "", int(request.args.get("status", "401"))

    return app, calls


def _attempt(user: str | None, status: int | str = 401) -> str:
    query = f"status={status}"
    return f"/login?{query}" if user is None else f"/login?user={user}&{query}"


async def test_keyed_failures_lock_the_key_for_every_address(rate_backend: Backend) -> None:
    app, calls = _keyed_app(rate_backend)
    async with serving(app) as client:
        statuses = [
            (await client.post(_attempt("alice"), **peer(f"10.0.0.{n}"))).status_code
            for n in range(5)
        ]
        owner = await client.post(_attempt("alice", 200), **peer("10.0.1.1"))
        other_key = await client.post(_attempt("bob", 200), **peer("10.0.1.1"))
    assert statuses == [401, 401, 401, 429, 429]
    assert owner.status_code == 429
    body = await owner.get_json()
    assert "Too many failed logins" in body["detail"]
    assert other_key.status_code == 200
    assert calls.count == 4


async def test_keyed_failures_over_many_keys_lock_the_address(rate_backend: Backend) -> None:
    app, calls = _keyed_app(rate_backend)
    async with serving(app) as client:
        statuses = [(await client.post(_attempt(f"user{n}"))).status_code for n in range(5)]
        elsewhere = await client.post(_attempt("user9"), **peer("10.0.1.1"))
    assert statuses == [401, 401, 401, 429, 429]
    assert elsewhere.status_code == 401
    assert calls.count == 4


async def test_keyed_success_clears_only_its_own_key_for_its_own_client(
    rate_backend: Backend,
) -> None:
    app, _ = _keyed_app(rate_backend, limit=3)
    me, other = peer("10.0.0.1"), peer("10.0.0.2")
    async with serving(app) as client:
        await client.post(_attempt("victim"), **me)
        await client.post(_attempt("victim"), **me)
        await client.post(_attempt("own", 200), **me)  # clears ("own", me): nothing
        laundered = await client.post(_attempt("victim"), **me)
        blocked = await client.post(_attempt("victim"), **me)
        await client.post(_attempt("shared"), **other)
        await client.post(_attempt("shared"), **me)
        await client.post(_attempt("shared", 200), **peer("10.0.0.3"))  # not these clients'
        cleared = await client.post(_attempt("shared", 200), **other)
    assert laundered.status_code == 401
    assert blocked.status_code == 429, "the success on another key cleared nothing"
    assert cleared.status_code == 200


async def test_keyed_success_gives_its_pair_a_fresh_budget(rate_backend: Backend) -> None:
    app, _ = _keyed_app(rate_backend, limit=3)
    async with serving(app) as client:
        first = [(await client.post(_attempt("alice"))).status_code for _ in range(2)]
        await client.post(_attempt("alice", 200))
        again = [(await client.post(_attempt("alice"))).status_code for _ in range(4)]
    assert first == [401, 401]
    assert again == [401, 401, 401, 429]


async def test_keyed_concurrent_attempts_reach_the_view_at_most_limit_times(
    rate_backend: Backend,
) -> None:
    app, calls = _keyed_app(rate_backend, limit=5)
    async with serving(app) as client:
        responses = await asyncio.gather(
            *(client.post(_attempt("alice"), **peer(f"10.0.{n}.1")) for n in range(50))
        )
    assert calls.count == 5
    assert sorted(r.status_code for r in responses) == [401] * 5 + [429] * 45


@pytest.mark.parametrize("outcome", [422, 400, 500, "raise"])
async def test_keyed_attempts_that_are_not_failures_are_given_back(
    backend: Backend, outcome: int | str
) -> None:
    app, calls = _keyed_app(backend, limit=2)
    async with serving(app) as client:
        for _ in range(4):
            await client.post(_attempt("alice", outcome))
        failures = [(await client.post(_attempt("alice"))).status_code for _ in range(3)]
    assert failures == [401, 401, 429]
    assert calls.count == 6


async def test_keyed_attempt_naming_no_key_counts_for_its_address_only(backend: Backend) -> None:
    app, _ = _keyed_app(backend, limit=2)
    async with serving(app) as client:
        anonymous = [(await client.post(_attempt(None))).status_code for _ in range(3)]
        other_address = await client.post(_attempt("alice"), **peer("10.0.0.9"))
    assert anonymous == [401, 401, 429]
    assert other_address.status_code == 401


async def test_keyed_tallies_are_kept_apart_from_address_shaped_keys(backend: Backend) -> None:
    """A key spelled like an address is a key: it never fills that address's tally."""
    app, _ = _keyed_app(backend, limit=2)
    async with serving(app) as client:
        for forged in ("10.0.0.1", "i:10.0.0.1", "i%3A10.0.0.1"):
            for _ in range(2):
                await client.post(_attempt(forged), **peer(f"10.0.1.{len(forged)}"))
        victim = await client.post(_attempt("alice"), **peer("10.0.0.1"))
    assert victim.status_code == 401


def test_keyed_protect_cannot_escalate() -> None:
    from quart_api.guards import ConfigurationError

    with pytest.raises(ConfigurationError, match="escalate"):
        protected(key=lambda: "x", escalate=True)


def _guessing_app(backend: Backend, limit: int) -> tuple[Any, Calls]:
    """A share-link lookup where every guess is wrong (404), slow enough to overlap."""
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/share/<token>")
    @protected(limit=limit, minutes=60)
    async def share(token: str) -> tuple[str, int]:
        calls()
        await asyncio.sleep(0.02)  # the database lookup: concurrent guesses overlap here
        return "no such link", 404

    return app, calls


async def test_fifty_concurrent_guesses_from_one_client_reach_the_view_only_limit_times(
    rate_backend: Backend,
) -> None:
    app, calls = _guessing_app(rate_backend, limit=5)
    async with serving(app) as client:
        responses = await asyncio.gather(*(client.get(f"/share/guess{n}") for n in range(50)))
    assert [r.status_code for r in responses] == [404] * 50
    assert calls.count == 5, "guesses in flight must count before their failures land"


async def test_concurrent_guesses_after_a_failure_reach_the_view_only_the_rest_of_the_budget(
    rate_backend: Backend,
) -> None:
    """With a failure on record, every attempt is reserved in the store itself."""
    app, calls = _guessing_app(rate_backend, limit=5)
    async with serving(app) as client:
        await client.get("/share/first")
        await asyncio.gather(*(client.get(f"/share/guess{n}") for n in range(30)))
        later = await client.get("/share/later")
    assert calls.count == 5
    assert later.status_code == 404


async def test_a_reserved_success_gives_its_attempt_back(rate_backend: Backend) -> None:
    """A client with failures on record keeps its budget however often it succeeds."""
    app, _ = make_app(rate_backend)
    calls = Calls()

    @app.get("/share/<token>")
    @protected(limit=3, minutes=60)
    async def share(token: str) -> tuple[str, int]:
        calls()
        return "", 200 if token == "good" else 404

    async with serving(app) as client:
        await client.get("/share/bad1")
        await client.get("/share/bad2")
        successes = [(await client.get("/share/good")).status_code for _ in range(10)]
        last_guess = await client.get("/share/bad3")
        banned = await client.get("/share/good")
    assert successes == [200] * 10, "reservations of successes must be given back"
    assert last_guess.status_code == 404
    assert calls.count == 13
    assert banned.status_code == 404
    assert calls.count == 13, "a banned client never reaches the view"


async def test_concurrent_guesses_from_other_clients_do_not_spend_this_clients_budget(
    backend: Backend,
) -> None:
    app, calls = _guessing_app(backend, limit=2)
    async with serving(app) as client:
        await asyncio.gather(
            *(client.get(f"/share/g{n}", **peer(f"10.0.{n}.1")) for n in range(20))
        )
    assert calls.count == 20


async def test_two_workers_sharing_a_store_stay_exact_once_the_client_has_failed(
    rate_backend: Backend,
) -> None:
    """Two apps on one store stand for two workers: the reservations live in the store."""
    from quart_api.guards.stores import MemoryCounterStore

    shared = {} if rate_backend.real else {"counter_store": MemoryCounterStore()}
    apps, counts = [], []
    for _ in range(2):
        app, _ = make_app(rate_backend, key_prefix="one-service", **shared)
        calls = Calls()

        @app.get("/share/<token>")
        @protected(limit=5, minutes=60)
        async def share(token: str, calls: Calls = calls) -> tuple[str, int]:
            calls()
            await asyncio.sleep(0.02)
            return "no such link", 404

        apps.append(app)
        counts.append(calls)
    async with serving(apps[0]) as first, serving(apps[1]) as second:
        await first.get("/share/opening-guess")
        await asyncio.gather(
            *(client.get(f"/share/g{n}") for n in range(20) for client in (first, second))
        )
    assert counts[0].count + counts[1].count == 5
