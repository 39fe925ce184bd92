"""``@cached``: hits skip the view; only cacheable successes are stored; no stampede."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Response, request
from quart.typing import TestClientProtocol as Client

from quart_api.guards import _cache_entries as cache_module
from quart_api.guards import cached, rate_limited
from quart_api.guards._state import state_of
from quart_api.guards.stores import MemoryCacheStore
from quart_api.testing import MemcachedServer
from tests.guards.conftest import Backend, Calls, FakeClock, make_app, route, serving


async def test_hit_skips_the_view(backend: Backend, placement: str) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    async def things() -> dict[str, int]:
        return {"version": calls()}

    route(app, "/things", things, [cached(minutes=5)], placement)
    async with serving(app) as client:
        miss = await client.get("/things")
        hit = await client.get("/things")
    assert calls.count == 1
    assert miss.headers["X-Cache"] == "miss"
    assert hit.headers["X-Cache"] == "hit"
    assert await hit.get_json() == await miss.get_json() == {"version": 1}
    assert hit.headers["Content-Type"] == "application/json"


async def test_status_body_and_chosen_headers_are_kept(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/things")
    @cached(minutes=5, headers=["X-Kept"])
    async def things() -> Response:
        return Response(
            b"", status=203, headers={"X-Kept": "1", "X-Dropped": "1", "Content-Language": "fr"}
        )

    async with serving(app) as client:
        await client.get("/things")
        hit = await client.get("/things")
    assert hit.headers["X-Cache"] == "hit"
    assert hit.status_code == 203
    assert await hit.get_data() == b""
    assert hit.headers["X-Kept"] == "1"
    assert hit.headers["Content-Language"] == "fr"
    assert "X-Dropped" not in hit.headers


async def test_etag_is_strong_quoted_and_the_same_in_every_app(backend: Backend) -> None:
    etags = []
    for _ in range(2):  # two app instances: two workers, or one after a restart
        app, _guards = make_app(backend)

        @app.get("/things")
        @cached(minutes=5)
        async def things() -> str:
            return "the same body"

        async with serving(app) as client:
            etags.append((await client.get("/things")).headers["ETag"])
        if backend.real:
            await _guards.reset(app)
    assert etags[0] == etags[1]
    assert re.fullmatch(r'"[0-9a-f]{16,}"', etags[0]), "strong (no W/) and quoted"


async def test_if_none_match_gets_304_without_a_body(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/things")
    @cached(minutes=5)
    async def things() -> str:
        calls()
        return "body"

    async with serving(app) as client:
        etag = (await client.get("/things")).headers["ETag"]
        not_modified = await client.get("/things", headers={"If-None-Match": etag})
        changed = await client.get("/things", headers={"If-None-Match": '"other"'})
    assert not_modified.status_code == 304
    assert await not_modified.get_data() == b""
    assert not_modified.headers["ETag"] == etag
    assert changed.status_code == 200
    assert calls.count == 1


async def test_head_is_served_from_the_get_entry(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/things")
    @cached(minutes=5)
    async def things() -> str:
        calls()
        return "body"

    async with serving(app) as client:
        get = await client.get("/things")
        head = await client.head("/things")
    assert head.status_code == 200
    assert head.headers["X-Cache"] == "hit"
    assert head.headers["ETag"] == get.headers["ETag"]
    assert head.headers["Content-Length"] == "4"  # the GET body's length
    assert calls.count == 1


async def test_query_order_does_not_split_the_cache(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/search")
    @cached(minutes=5)
    async def search() -> dict[str, Any]:
        calls()
        return dict(request.args)

    async with serving(app) as client:
        first = await client.get("/search?a=1&b=2")
        reordered = await client.get("/search?b=2&a=1")
        different = await client.get("/search?a=2&b=2")
    assert reordered.headers["X-Cache"] == "hit"
    assert await reordered.get_json() == await first.get_json()
    assert different.headers["X-Cache"] == "miss"
    assert calls.count == 2


async def _stream() -> AsyncIterator[bytes]:
    yield b"chunk"


UNCACHEABLE: dict[str, Callable[[], Any]] = {
    "server error": lambda: ("oops", 500),
    "not found": lambda: ("gone", 404),
    "set-cookie": lambda: Response("hi", headers={"Set-Cookie": "session=abc"}),
    "no-store": lambda: Response("hi", headers={"Cache-Control": "no-store"}),
    "private on a shared entry": lambda: Response("hi", headers={"Cache-Control": "private"}),
    "vary star": lambda: Response("hi", headers={"Vary": "*"}),
    "streamed body": lambda: Response(_stream()),
}


@pytest.mark.parametrize("case", list(UNCACHEABLE))
async def test_uncacheable_responses_are_never_stored(backend: Backend, case: str) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/things")
    @cached(minutes=5)
    async def things() -> Any:
        calls()
        return UNCACHEABLE[case]()

    async with serving(app) as client:
        responses = [await client.get("/things") for _ in range(2)]
    assert calls.count == 2
    assert all(r.headers.get("X-Cache") != "hit" for r in responses)


async def test_empty_success_is_cached_too(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/nothing")
    @cached(minutes=5)
    async def nothing() -> tuple[str, int]:
        calls()
        return "", 204

    async with serving(app) as client:
        await client.get("/nothing")
        hit = await client.get("/nothing")
    assert hit.status_code == 204
    assert hit.headers["X-Cache"] == "hit"
    assert calls.count == 1


async def test_per_user_entries_never_cross_users(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/me")
    @cached(minutes=5, unique_per_user=True)
    async def me() -> Response:
        calls()
        return Response(f"hello {request.headers['X-User']}", headers={"Cache-Control": "private"})

    async with serving(app) as client:
        alice = await client.get("/me", headers={"X-User": "alice"})
        bob = await client.get("/me", headers={"X-User": "bob"})
        alice_again = await client.get("/me", headers={"X-User": "alice"})
    assert await alice.get_data() == b"hello alice"
    assert await bob.get_data() == b"hello bob"
    assert bob.headers["X-Cache"] == "miss"
    assert alice_again.headers["X-Cache"] == "hit", "a private response is stored per user"
    assert await alice_again.get_data() == b"hello alice"
    assert calls.count == 2


async def test_per_user_entries_looked_up_with_the_limit_check_never_cross_users(
    rate_backend: Backend,
) -> None:
    # With a per-user limit, the user is known before the check, so the entry's lookup
    # is sent with it: the key must still be the caller's own.
    app, _ = make_app(rate_backend)
    state_of(app).generation_ttl = 60.0  # the generation stays known: lookups start early
    calls = Calls()

    @app.get("/me")
    @rate_limited(limit=100, minutes=1)
    @cached(minutes=5, unique_per_user=True)
    async def me() -> Response:
        calls()
        who = request.headers.get("X-User") or request.headers.get("Authorization", "nobody")
        return Response(f"hello {who}", headers={"Cache-Control": "private"})

    callers = [{"X-User": "alice"}, {"X-User": "bob"}, {}, {"Authorization": "Bearer x"}]
    async with serving(app) as client:
        rounds = [[(await client.get("/me", headers=h)) for h in callers] for _ in range(3)]
    for responses in rounds:
        bodies = [await r.get_data(as_text=True) for r in responses]
        assert bodies == ["hello alice", "hello bob", "hello nobody", "hello Bearer x"]
    # (a credential without a user bypasses the cache: no X-Cache at all)
    assert [r.headers.get("X-Cache") for r in rounds[2]] == ["hit", "hit", "miss", None]
    # alice, bob once each; the anonymous private answer and the credential without a
    # user are never stored under a shared key
    assert calls.count == 2 + 3 + 3


async def test_credentials_without_a_resolvable_user_are_not_cached(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/me")
    @cached(minutes=5, unique_per_user=True)
    async def me() -> str:
        calls()
        return f"secret for {request.headers.get('Authorization', 'nobody')}"

    async with serving(app) as client:
        for token in ("Bearer a", "Bearer a"):
            credentialed = await client.get("/me", headers={"Authorization": token})
            assert await credentialed.get_data() == b"secret for Bearer a"
        anonymous = await client.get("/me")
    assert calls.count == 3, "the credentialed requests ran the view each time"
    assert await anonymous.get_data() == b"secret for nobody"


async def test_anonymous_private_response_is_not_shared_under_unique_per_user(
    backend: Backend,
) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/me")
    @cached(minutes=5, unique_per_user=True)
    async def me() -> Response:
        calls()
        return Response("yours only", headers={"Cache-Control": "private"})

    async with serving(app) as client:
        for _ in range(2):
            await client.get("/me")  # no user: the entry would be a shared one
    assert calls.count == 2


async def test_concurrent_misses_run_the_view_once(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/slow")
    @cached(minutes=5)
    async def slow() -> dict[str, int]:
        version = calls()
        await asyncio.sleep(0.3)
        return {"version": version}

    async with serving(app) as client:
        responses = await asyncio.gather(*(client.get("/slow") for _ in range(30)))
    assert calls.count == 1
    assert all(r.status_code == 200 for r in responses)
    bodies = {await r.get_data() for r in responses}
    assert len(bodies) == 1, "every waiter got the one computed response"


async def test_stale_copy_is_served_while_one_request_refreshes(
    backend: Backend, clock: FakeClock
) -> None:
    app, _ = make_app(backend, clock=clock)
    calls = Calls()
    release = asyncio.Event()

    @app.get("/things")
    @cached(seconds=10)  # fresh 10 s, then stale for 10 s more
    async def things() -> str:
        version = calls()
        if version == 2:
            await release.wait()
        return f"v{version}"

    async with serving(app) as client:
        await client.get("/things")
        clock.advance(12)
        refreshing = asyncio.ensure_future(client.get("/things"))
        while calls.count < 2:
            await asyncio.sleep(0.005)
        others = [await client.get("/things") for _ in range(3)]
        release.set()
        refreshed = await refreshing
        after = await client.get("/things")
    assert [await r.get_data() for r in others] == [b"v1"] * 3
    assert [r.headers["X-Cache"] for r in others] == ["stale"] * 3
    assert await refreshed.get_data() == b"v2"
    assert await after.get_data() == b"v2"
    assert after.headers["X-Cache"] == "hit"
    assert calls.count == 2


@pytest.mark.parametrize("failure", ["raises", "answers 503"])
async def test_failing_view_inside_the_stale_window_is_answered_from_stale_copy(
    backend: Backend, clock: FakeClock, failure: str
) -> None:
    app, _ = make_app(backend, clock=clock)
    calls = Calls()

    @app.get("/things")
    @cached(seconds=10, stale=20)
    async def things() -> tuple[str, int]:
        if calls() > 1:
            if failure == "raises":
                raise RuntimeError("database down")
            return "down", 503
        return "v1", 200

    async with serving(app) as client:
        await client.get("/things")
        clock.advance(25)  # past fresh, inside stale
        stale = await client.get("/things")
        clock.advance(10)  # past stale too: nothing to fall back on
        expired = await client.get("/things")
    assert stale.status_code == 200
    assert await stale.get_data() == b"v1"
    assert stale.headers["X-Cache"] == "stale"
    assert expired.status_code in (500, 503)


async def test_stale_zero_disables_stale_serving(backend: Backend, clock: FakeClock) -> None:
    app, _ = make_app(backend, clock=clock)
    calls = Calls()

    @app.get("/things")
    @cached(seconds=10, stale=0)
    async def things() -> str:
        return f"v{calls()}"

    async with serving(app) as client:
        await client.get("/things")
        clock.advance(11)
        second = await client.get("/things")
    assert await second.get_data() == b"v2"


async def test_bare_cached_keeps_entries_five_minutes(backend: Backend, clock: FakeClock) -> None:
    app, _ = make_app(backend, clock=clock)
    calls = Calls()

    @app.get("/things")
    @cached
    async def things() -> str:
        return f"v{calls()}"

    async with serving(app) as client:
        await client.get("/things")
        clock.advance(299)
        fresh = await client.get("/things")
        clock.advance(2)
        refreshed = await client.get("/things")
    assert fresh.headers["X-Cache"] == "hit"
    assert await refreshed.get_data() == b"v2"


async def test_values_over_the_item_size_are_skipped_not_errors(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/huge")
    @cached(minutes=5)
    async def huge() -> bytes:
        calls()
        return b"x" * (2 * 1024 * 1024)

    async with serving(app) as client:
        responses = [await client.get("/huge") for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert len(await responses[1].get_data()) == 2 * 1024 * 1024
    assert calls.count == 2


async def test_invalidate_makes_the_next_request_a_miss(backend: Backend) -> None:
    app, guards = make_app(backend)
    calls = Calls()

    @app.get("/things")
    @cached(minutes=5)
    async def things() -> str:
        return f"v{calls()}"

    @app.get("/grouped/<name>")
    @cached(minutes=5, namespace="group")
    async def grouped(name: str) -> str:
        return f"{name}{calls()}"

    async with serving(app) as client:
        await client.get("/things")
        assert (await client.get("/things")).headers["X-Cache"] == "hit"
        await guards.invalidate("things", app)
        after = await client.get("/things")
        await client.get("/grouped/a")
        await guards.invalidate("group", app)
        grouped_after = await client.get("/grouped/a")
    assert after.headers["X-Cache"] == "miss"
    assert await after.get_data() == b"v2"
    assert grouped_after.headers["X-Cache"] == "miss"


async def test_client_no_cache_does_not_force_the_view_to_run(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/things")
    @cached(minutes=5)
    async def things() -> str:
        calls()
        return "body"

    async with serving(app) as client:
        await client.get("/things")
        forced = await client.get(
            "/things", headers={"Cache-Control": "no-cache, max-age=0", "Pragma": "no-cache"}
        )
    assert forced.headers["X-Cache"] == "hit"
    assert calls.count == 1


async def test_post_is_never_cached(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.route("/things", methods=["GET", "POST"])
    @cached(minutes=5)
    async def things() -> str:
        calls()
        return "done"

    async with serving(app) as client:
        posts = [await client.post("/things") for _ in range(2)]
    assert calls.count == 2
    assert all("X-Cache" not in r.headers for r in posts)


async def test_two_workers_sharing_memcached_run_a_slow_view_once(
    redis_url: str, memcached_servers: str
) -> None:
    """Two apps on one memcached stand for two hypercorn workers: the ``add`` lock holds."""
    calls = Calls()
    backend = Backend("real", redis_url, memcached_servers)
    apps = []
    for _ in range(2):
        app, _guards = make_app(backend)

        @app.get("/slow")
        @cached(minutes=5)
        async def slow() -> str:
            calls()
            await asyncio.sleep(0.4)  # slower than any fixed polling budget
            return "computed once"

        apps.append(app)
    async with serving(apps[0]) as first, serving(apps[1]) as second:
        responses = await asyncio.gather(
            *(client.get("/slow") for client in (first, second) for _ in range(5))
        )
    assert [r.status_code for r in responses] == [200] * 10
    assert calls.count == 1


async def test_long_unicode_urls_are_cached_under_short_keys(backend: Backend) -> None:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/search/<path:words>")
    @cached(minutes=5)
    async def search(words: str) -> str:
        calls()
        return words[:10]

    path = "/search/" + "é" * 600
    query = {"q": "ü" * 600}
    async with serving(app) as client:
        responses = [await client.get(path, query_string=query) for _ in range(2)]
    assert [r.headers["X-Cache"] for r in responses] == ["miss", "hit"]
    assert calls.count == 1


def test_entries_that_are_not_ours_are_misses_never_code() -> None:
    """Entries are a versioned msgpack envelope: anything else (pickle too) reads as a miss."""
    import pickle

    from quart_api.guards._cache_entries import Entry, decode_entry, encode_entry

    entry = Entry(200, (("Content-Type", "text/plain"),), b"", '"e"', 1.0, 2.0, 3.0)
    assert decode_entry(encode_entry(entry)) == entry
    for raw in (b"", b"garbage", pickle.dumps({"status": 200}), encode_entry(entry)[:-3]):
        assert decode_entry(raw) is None


def test_unchanged_entry_bytes_are_decoded_once_changed_ones_again() -> None:
    from quart_api.guards._cache_entries import DecodedEntries, Entry, encode_entry

    first = Entry(200, (("Content-Type", "text/plain"),), b"one", '"1"', 1.0, 2.0, 3.0)
    second = Entry(200, (("Content-Type", "text/plain"),), b"two", '"2"', 1.0, 2.0, 3.0)
    decoded = DecodedEntries()
    a = decoded.decode(b"k", encode_entry(first))
    assert a == first
    assert decoded.decode(b"k", bytes(encode_entry(first))) is a  # equal bytes: not decoded
    b = decoded.decode(b"k", encode_entry(second))  # the key's bytes changed: decoded afresh
    assert b == second
    assert decoded.decode(b"other", encode_entry(first)) is not a  # per key
    assert decoded.decode(b"k", b"garbage") is None


def test_decoded_entries_stay_within_their_byte_budget_oldest_first() -> None:
    from quart_api.guards._cache_entries import DecodedEntries, Entry, encode_entry

    raws = [
        encode_entry(Entry(200, (), bytes([n]) * 1000, f'"{n}"', 1.0, 2.0, 3.0)) for n in range(5)
    ]
    decoded = DecodedEntries(max_bytes=2 * len(raws[0]) * 3)  # room for three
    kept = [decoded.decode(b"k%d" % n, raw) for n, raw in enumerate(raws)]
    assert decoded.decode(b"k4", raws[4]) is kept[4]  # the newest three are kept
    assert decoded.decode(b"k2", raws[2]) is kept[2]
    assert decoded.decode(b"k0", raws[0]) is not kept[0]  # the oldest went first


def test_a_hit_never_repeats_the_headers_it_sets_itself() -> None:
    """An entry written by anything else with its own Content-Length or ETag loses them."""
    import msgpack

    from quart_api.guards._cache_entries import ENTRY_VERSION, decode_entry

    stored = [["Content-Type", "text/plain"], ["Content-Length", "999"], ["ETag", '"x"']]
    raw = msgpack.packb([ENTRY_VERSION, 200, stored, b"body", '"e"', 1.0, 2.0, 3.0])
    entry = decode_entry(raw)
    assert entry is not None
    response = entry.response("hit")
    assert response.headers.getlist("Content-Length") == ["4"]
    assert response.headers.getlist("ETag") == ['"e"']
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["X-Cache"] == "hit"


@pytest.mark.parametrize(
    "planted",
    [
        ["X-Note", "a\r\nSet-Cookie: session=planted"],
        ["X-Note\r\nSet-Cookie", "session=planted"],
        ["X-Note", "a\x00b"],
        ["X-Note", "a\x0bb"],
        ["X-Note", " a"],
        ["Transfer-Encoding", "gzip"],
        ["Set-Cookie", "session=planted"],
    ],
    ids=[
        "line-break-in-value",
        "line-break-in-name",
        "nul-in-value",
        "vertical-tab-in-value",
        "leading-space",
        "framing-header",
        "cookie",
    ],
)
async def test_a_planted_entry_with_a_header_no_view_can_send_is_a_miss_not_served(
    backend: Backend, planted: list[str]
) -> None:
    """Whoever can write memcached plants an entry whose header would split the response,
    fail to send on every hit, or set a cookie: it is not an entry (hits add their
    headers unchecked), so the view answers."""
    import msgpack

    from quart_api.guards._cache_entries import ENTRY_VERSION

    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/page")
    @cached(minutes=5)
    async def page() -> str:
        calls()
        return "from the view"

    async with serving(app) as client:
        state = state_of(app)
        written: list[bytes] = []
        real_set = state.cache.set

        async def note_the_key(key: bytes, value: bytes, ttl: int) -> bool:
            written.append(key)
            return await real_set(key, value, ttl)

        state.cache.set = note_the_key  # type: ignore[method-assign]
        await client.get("/page")  # a miss: the real entry is stored under its key
        [key] = written
        planted_raw = msgpack.packb(
            [ENTRY_VERSION, 200, [planted], b"planted body", '"p"', 0.0, 4e9, 4e9]
        )
        assert await real_set(key, planted_raw, 60)
        state.decoded = type(state.decoded)()  # as a worker that never decoded the key
        answer = await client.get("/page")
    assert answer.status_code == 200
    assert await answer.get_data() == b"from the view"
    assert "Set-Cookie" not in answer.headers
    assert "X-Note" not in answer.headers
    assert "Transfer-Encoding" not in answer.headers
    assert calls.count == 2


async def test_entries_with_non_ascii_and_inner_tabs_in_their_headers_are_still_hits(
    backend: Backend,
) -> None:
    """The check on decoded entries refuses only what no view can send: any header a
    view sets is served from the cache, not recomputed on every request."""
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/file")
    @cached(minutes=5, headers=["X-Note"])
    async def file() -> Response:
        calls()
        response = Response("data")
        response.headers["Content-Disposition"] = "attachment; filename*=UTF-8''na\u00efve.txt"
        response.headers["Content-Language"] = "fr,\tde"
        response.headers["X-Note"] = "caf\u00e9 \x7f ok"
        return response

    async with serving(app) as client:
        first = await client.get("/file")
        state_of(app).decoded = type(state_of(app).decoded)()  # decode it from the store
        second = await client.get("/file")
    assert [first.headers["X-Cache"], second.headers["X-Cache"]] == ["miss", "hit"]
    assert second.headers["X-Note"] == "caf\u00e9 \x7f ok"
    assert second.headers["Content-Language"] == "fr,\tde"
    assert calls.count == 1


# -- query normalization: what the view can and cannot tell apart --------------------


def _echo_first_values(backend: Backend) -> tuple[Any, Calls]:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/search")
    @cached(minutes=5)
    async def search() -> dict[str, Any]:
        calls()
        return {"first": request.args.to_dict(), "all": request.args.to_dict(flat=False)}

    return app, calls


async def test_repeated_query_names_keep_their_value_order(backend: Backend) -> None:
    app, _ = _echo_first_values(backend)
    async with serving(app) as client:
        first = await client.get("/search?a=1&a=2")
        swapped = await client.get("/search?a=2&a=1")
        names_swapped = await client.get("/search?b=0&a=1&a=2")
        names_swapped_again = await client.get("/search?a=1&b=0&a=2")
    assert (await first.get_json())["first"] == {"a": "1"}
    assert swapped.headers["X-Cache"] == "miss", "the view reads a=2 first: another answer"
    assert (await swapped.get_json())["first"] == {"a": "2"}
    assert names_swapped_again.headers["X-Cache"] == "hit"
    assert await names_swapped_again.get_json() == await names_swapped.get_json()


@pytest.mark.parametrize(
    ("one", "other"),
    [("a=1", "%61=1"), ("q=a+b", "q=a%20b"), ("a", "a="), ("q=%c3%a9", "q=%C3%A9")],
    ids=["escaped-name", "plus-is-space", "blank-value", "hex-case"],
)
async def test_query_spellings_the_view_cannot_tell_apart_share_an_entry(
    backend: Backend, one: str, other: str
) -> None:
    app, calls = _echo_first_values(backend)
    async with serving(app) as client:
        first = await client.get(f"/search?{one}")
        second = await client.get(f"/search?{other}")
    assert second.headers["X-Cache"] == "hit"
    assert await second.get_json() == await first.get_json()
    assert calls.count == 1


@pytest.mark.parametrize(
    ("one", "other"),
    [("q=a%2Bb", "q=a+b"), ("a=1%262", "a=1&2"), ("a=%FF", "a=%FE"), ("a=1", "a=1&a=1")],
    ids=["escaped-plus", "escaped-ampersand", "invalid-utf-8", "repeated-value"],
)
async def test_query_spellings_the_view_tells_apart_never_share_an_entry(
    backend: Backend, one: str, other: str
) -> None:
    app, calls = _echo_first_values(backend)
    async with serving(app) as client:
        await client.get(f"/search?{one}")
        second = await client.get(f"/search?{other}")
    assert second.headers["X-Cache"] == "miss"
    assert calls.count == 2


# -- what a cached answer carries ----------------------------------------------------


async def _raw(client: Client, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Status and headers exactly as the app sent them (the test client adds defaults)."""
    async with client.request(path, headers=headers) as connection:
        await connection.send_complete()
        await connection.as_response()
    return connection.status_code or 0, {k.lower(): v for k, v in connection.headers.items()}


async def test_not_modified_from_the_cache_carries_no_content_metadata(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/things")
    @cached(minutes=5)
    async def things() -> Response:
        return Response('{"a": 1}', content_type="application/json", headers={"Vary": "Accept"})

    async with serving(app) as client:
        etag = (await client.get("/things")).headers["ETag"]
        status, headers = await _raw(client, "/things", {"If-None-Match": etag})
    assert status == 304
    assert "content-type" not in headers
    assert "content-length" not in headers, "a 304 must not claim the 200's body is empty"
    assert headers["etag"] == etag
    assert headers["vary"] == "Accept"


async def test_a_cached_no_content_answer_has_no_content_length(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/nothing")
    @cached(minutes=5)
    async def nothing() -> tuple[str, int]:
        return "", 204

    async with serving(app) as client:
        await client.get("/nothing")
        status, headers = await _raw(client, "/nothing", {})
    assert status == 204
    assert headers["x-cache"] == "hit"
    assert "content-length" not in headers


async def test_an_empty_user_id_never_shares_the_anonymous_entry(backend: Backend) -> None:
    app, _ = make_app(backend)

    @app.get("/me")
    @cached(minutes=5, unique_per_user=True)
    async def me() -> Response:
        who = request.headers.get("X-User")
        return Response(f"private to {who!r}", headers={"Cache-Control": "private"})

    async with serving(app) as client:
        await client.get("/me", headers={"X-User": ""})
        await client.get("/me", headers={"X-User": ""})
        anonymous = await client.get("/me")
    assert await anonymous.get_data() == b"private to None"


# -- entries across deploys and store faults -----------------------------------------


async def test_workers_of_two_entry_versions_keep_their_own_entries(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling deploy: old and new workers share memcached, each reads its own format."""
    shared = None if backend.real else MemoryCacheStore()
    apps, calls = [], Calls()
    for version in (1, 2):
        monkeypatch.setattr(cache_module, "ENTRY_VERSION", version)
        app, _ = make_app(backend, cache_store=shared)

        @app.get("/things")
        @cached(minutes=5)
        async def things(version: int = version) -> str:
            calls()
            return f"written by version {version}"

        apps.append(app)
        async with serving(app) as client:  # installs the view: its keys are now fixed
            await client.get("/things")
    monkeypatch.setattr(cache_module, "ENTRY_VERSION", 1)
    async with serving(apps[0]) as old:
        again = await old.get("/things")
    assert again.headers["X-Cache"] == "hit"
    assert await again.get_data() == b"written by version 1"
    assert calls.count == 2


async def test_a_failed_generation_read_never_serves_the_body_from_before_invalidate(
    memcached_server: MemcachedServer, redis_url: str, memcached_servers: str, clock: FakeClock
) -> None:
    backend = Backend("real", redis_url, memcached_servers)
    app, guards = make_app(backend, clock=clock, store_timeout=0.3)
    calls = Calls()

    @app.get("/things")
    @cached(minutes=5)
    async def things() -> str:
        return f"v{calls()}"

    async with serving(app) as client:
        await client.get("/things")
        await guards.invalidate("things", app)
        clock.advance(2)  # the remembered generation is due for a re-read
        memcached_server.pause()
        try:
            during = await client.get("/things")
        finally:
            memcached_server.resume()
        after = await client.get("/things")
    assert await during.get_data() == b"v2"
    assert await after.get_data() != b"v1", "the entry from before invalidate() came back"
    assert after.headers["X-Cache"] == "miss"


# -- memcached's whole-second clock (real time: that clock cannot be injected) ----------


def _memcached_time(server: MemcachedServer) -> int:
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "time":
            return int(parts[2])
    raise AssertionError("memcached stats has no time")


def _late_in_a_memcached_second(server: MemcachedServer) -> None:
    """Wait until memcached's clock has just ticked, then most of a second more.

    An item stored now is dated by a clock that is about to tick: a relative TTL of
    N seconds then ends about N - 1 seconds from now, the worst case being tested.
    """
    start = _memcached_time(server)
    deadline = time.monotonic() + 3
    while _memcached_time(server) == start and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.8)


async def test_a_view_failing_inside_the_stale_window_gets_the_stale_copy_on_memcached(
    memcached_server: MemcachedServer, redis_url: str, memcached_servers: str
) -> None:
    app, _ = make_app(Backend("real", redis_url, memcached_servers))
    calls = Calls()

    @app.get("/things")
    @cached(seconds=1)  # fresh 1 s, then stale 1 s more
    async def things() -> str:
        if calls() > 1:
            raise RuntimeError("database down")
        return "v1"

    async with serving(app) as client:
        _late_in_a_memcached_second(memcached_server)
        started = time.monotonic()
        await client.get("/things")
        await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
        stale = await client.get("/things")
    assert stale.status_code == 200
    assert stale.headers["X-Cache"] == "stale"
    assert await stale.get_data() == b"v1"


async def test_others_get_the_stale_copy_during_a_refresh_on_memcached(
    memcached_server: MemcachedServer, redis_url: str, memcached_servers: str
) -> None:
    app, _ = make_app(Backend("real", redis_url, memcached_servers))
    calls = Calls()
    release = asyncio.Event()

    @app.get("/things")
    @cached(seconds=1)
    async def things() -> str:
        version = calls()
        if version == 2:
            await asyncio.wait_for(release.wait(), timeout=5)
        return f"v{version}"

    async with serving(app) as client:
        _late_in_a_memcached_second(memcached_server)
        started = time.monotonic()
        await client.get("/things")
        await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
        refreshing = asyncio.ensure_future(client.get("/things"))
        while calls.count < 2 and not refreshing.done():
            await asyncio.sleep(0.005)
        others = await asyncio.wait_for(
            asyncio.gather(*(client.get("/things") for _ in range(3))), timeout=5
        )
        release.set()
        refreshed = await refreshing
    assert [r.headers["X-Cache"] for r in others] == ["stale"] * 3
    assert [await r.get_data() for r in others] == [b"v1"] * 3
    assert await refreshed.get_data() == b"v2"


# -- query=: the names the view reads, and nothing a client adds --------------------


def _paged(backend: Backend) -> tuple[Any, Calls]:
    app, _ = make_app(backend)
    calls = Calls()

    @app.get("/paged")
    @cached(minutes=5, query=("page", "per_page"))
    async def paged() -> dict[str, Any]:
        calls()
        return {"page": request.args.get("page", "1"), "per_page": request.args.get("per_page")}

    return app, calls


async def test_random_unlisted_query_params_get_the_cached_entry_instead_of_a_run(
    backend: Backend,
) -> None:
    """A client adding ``?x=<random>`` neither runs the view again nor fills the cache."""
    app, calls = _paged(backend)
    async with serving(app) as client:
        first = await client.get("/paged?page=2")
        junk = [await client.get(f"/paged?page=2&x={n}&utm_{n}=y") for n in range(10)]
    assert [r.headers["X-Cache"] for r in junk] == ["hit"] * 10
    bodies = [await r.get_json() for r in junk]
    assert bodies == [await first.get_json()] * 10
    assert calls.count == 1


async def test_repeating_a_listed_name_with_random_values_gets_the_cached_entry(
    backend: Backend,
) -> None:
    """The view reads the first value; later ones are not part of the key."""
    app, calls = _paged(backend)
    async with serving(app) as client:
        await client.get("/paged?page=3")
        repeated = [await client.get(f"/paged?page=3&page={n}") for n in range(5)]
    assert [r.headers["X-Cache"] for r in repeated] == ["hit"] * 5
    assert calls.count == 1


async def test_listed_query_values_still_make_their_own_entries(backend: Backend) -> None:
    app, calls = _paged(backend)
    async with serving(app) as client:
        answers = [
            await (await client.get(path)).get_json()
            for path in ("/paged?page=1", "/paged?page=2", "/paged?per_page=5&page=2", "/paged")
        ]
        again = await client.get("/paged?per_page=5&page=2")
    assert [a["page"] for a in answers] == ["1", "2", "2", "1"]
    assert answers[2]["per_page"] == "5"
    assert calls.count == 4, "no listed value was served another's entry"
    assert again.headers["X-Cache"] == "hit"


@pytest.mark.parametrize("query", ["page", ["page", ""], [1]])
def test_query_takes_a_list_of_parameter_names(query: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="query="):
        cached(minutes=1, query=query)
