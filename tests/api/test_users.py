"""/api/v1/users: sign-up, list, read, update, password, delete, create-or-update.

Every error path answers problem+json naming the problem and leaves the
database exactly as it was.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import select

from quart_api.api.users import user_body
from quart_api.auth import Principal
from quart_api.db import Database
from quart_api.models import User
from quart_api.settings import RateSpec
from quart_api.testing import PostgresServer
from tests.api.conftest import PASSWORD, Bearer, MakeUser, bearer_maker, make_app, user_maker
from tests.api.helpers import (
    assert_problem,
    count,
    logged_in,
    settled,
    table_rows,
    unchanged_database,
)
from tests.statements import sent_to

#: A well-formed id that no row has (fixed, so every test process collects the same ids).
UNKNOWN_ID = "3f1c2a4e-9b7d-4c1e-8f0a-2d6b5e4c3a21"

USERS = "/api/v1/users"
NEW_PASSWORD = "a brand new passphrase"


# -- sign-up ---------------------------------------------------------------


async def test_sign_up_is_201_with_location_and_the_owners_view(app: Quart, client: Client) -> None:
    response = await client.post(
        USERS, json={"username": "Alice", "password": PASSWORD, "email": "a@example.org"}
    )
    assert response.status_code == 201
    body = await response.get_json()
    user = body["data"]
    assert uuid.UUID(user["id"])
    assert user["username"] == "Alice"
    assert user["email"] == "a@example.org"
    assert user["is_admin"] is False
    assert user["created_at"].endswith("+00:00")
    assert "password" not in user
    assert "password_hash" not in user
    assert response.headers["Location"].endswith(f"{USERS}/{user['id']}")
    assert await count(app, "users") == 1


async def test_sign_up_of_a_taken_username_is_409_whatever_its_case(
    app: Quart, client: Client, make_user: MakeUser
) -> None:
    await make_user("alice")
    async with unchanged_database(app):
        response = await client.post(USERS, json={"username": "ALICE", "password": PASSWORD})
        await assert_problem(response, 409, detail="taken")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"username": "bob", "password": PASSWORD, "nickname": "b"}, ["nickname"]),
        ({"username": "bob", "password": PASSWORD, "is_admin": True}, ["is_admin"]),
        ({"username": "bob", "password": PASSWORD, "id": str(uuid.uuid4())}, ["id"]),
        (
            {"username": "bob", "password": PASSWORD, "created_at": "2020-01-01T00:00:00Z"},
            ["created_at"],
        ),
        (
            {"username": "bob", "password": PASSWORD, "password_hash": "$argon2id$x"},
            ["password_hash"],
        ),
        ({"username": "bob", "password": PASSWORD, "session_version": 7}, ["session_version"]),
        ({"username": 42, "password": PASSWORD}, ["username"]),
        ({"username": "bob", "password": 12345678}, ["password"]),
        ({"username": "bob", "password": PASSWORD, "email": ["a@b.c"]}, ["email"]),
        ({"username": "b" * 65, "password": PASSWORD}, ["username"]),
        ({"username": "bob", "password": PASSWORD, "full_name": "x" * 201}, ["full_name"]),
        ({"username": "bob", "password": "x" * 1025}, ["password"]),
        ({"username": "bob", "password": "short"}, ["password"]),
        ({"username": "bob o'brien", "password": PASSWORD}, ["username"]),
        ({"username": "bob", "password": PASSWORD, "email": "not-an-address"}, ["email"]),
        ({"password": PASSWORD}, ["username"]),
        ({"username": "bob"}, ["password"]),
        ({"username": None, "password": PASSWORD}, ["username"]),
        ({"is_admin": True, "id": "x", "nickname": 1}, ["is_admin", "id", "nickname"]),
    ],
)
async def test_sign_up_with_invalid_fields_is_422_naming_each_and_writes_nothing(
    app: Quart, client: Client, body: dict[str, Any], fields: list[str]
) -> None:
    async with unchanged_database(app):
        response = await client.post(USERS, json=body)
        problem = await assert_problem(response, 422, fields=fields)
    text = str(problem)
    for secret in (PASSWORD, "short", "x" * 1025):
        assert secret not in text


async def test_sign_up_with_a_body_that_is_not_an_object_is_422(app: Quart, client: Client) -> None:
    async with unchanged_database(app):
        response = await client.post(USERS, json=["username", "bob"])
        await assert_problem(response, 422, fields=["(body)"])


async def test_sign_up_with_malformed_json_is_400(app: Quart, client: Client) -> None:
    async with unchanged_database(app):
        response = await client.post(
            USERS,
            data=b'{"username": "bob", "password": ',
            headers={"Content-Type": "application/json"},
        )
        await assert_problem(response, 400, detail="not valid JSON")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_sign_up_with_a_non_json_content_type_is_415(
    app: Quart, client: Client, content_type: str
) -> None:
    async with unchanged_database(app):
        response = await client.post(
            USERS,
            data=b'{"username": "bob", "password": "correct horse battery"}',
            headers={"Content-Type": content_type},
        )
        await assert_problem(response, 415, detail="JSON")


async def test_sign_up_with_an_oversized_body_is_413(app: Quart, client: Client) -> None:
    body = {"username": "bob", "password": PASSWORD, "full_name": "x" * 70_000}
    async with unchanged_database(app):
        await assert_problem(await client.post(USERS, json=body), 413)


async def test_sign_up_against_a_stalled_database_is_503_within_the_deadline(
    tmp_path: Path, pg_database: str, postgres_server: PostgresServer
) -> None:
    app = await make_app(tmp_path, database_url=pg_database, database_timeout=0.3)
    async with app.test_app():
        postgres_server.pause()
        try:
            started = time.monotonic()
            response = await app.test_client().post(
                USERS, json={"username": "bob", "password": PASSWORD}
            )
            elapsed = time.monotonic() - started
        finally:
            postgres_server.resume()
    await assert_problem(response, 503, detail="database")
    assert response.headers["Retry-After"] == "1"
    assert "RateLimit" in response.headers
    assert elapsed < 3  # the stalled server never answers: the deadline did


# -- list ------------------------------------------------------------------


async def test_list_pages_through_every_user_in_a_stable_order(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    users = [await make_user(f"user{i}") for i in range(5)]
    auth = await bearer(users[0])
    pages = []
    for page in (1, 2, 3):
        response = await client.get(f"{USERS}?per_page=2&page={page}", headers=auth)
        assert response.status_code == 200
        pages.append(await response.get_json())
    assert [(p["page"], p["prev_page"], p["next_page"]) for p in pages] == [
        (1, None, 2),
        (2, 1, 3),
        (3, 2, None),
    ]
    assert {(p["total"], p["total_pages"]) for p in pages} == {(5, 3)}
    assert all(
        set(p) == {"data", "total", "page", "total_pages", "next_page", "prev_page"} for p in pages
    )
    listed = [u["id"] for p in pages for u in p["data"]]
    assert listed == [str(u.id) for u in users]
    again = await client.get(f"{USERS}?page=2&per_page=2", headers=auth)
    assert [u["id"] for u in (await again.get_json())["data"]] == listed[2:4]


async def test_list_shows_email_only_on_the_callers_own_entry(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    await make_user("bob")
    response = await client.get(USERS, headers=await bearer(alice))
    by_name = {u["username"]: u for u in (await response.get_json())["data"]}
    assert by_name["alice"]["email"] == "alice@example.org"
    assert "email" not in by_name["bob"]
    assert "is_admin" not in by_name["bob"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("per_page=101", "per_page"),
        ("per_page=0", "per_page"),
        ("page=0", "page"),
        ("page=x", "page"),
    ],
)
async def test_list_with_bad_pagination_is_422_naming_the_parameter(
    client: Client, make_user: MakeUser, bearer: Bearer, query: str, field: str
) -> None:
    auth = await bearer(await make_user("alice"))
    await assert_problem(await client.get(f"{USERS}?{query}", headers=auth), 422, fields=[field])


async def test_list_with_both_parameters_bad_names_both(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    response = await client.get(f"{USERS}?per_page=x&page=1000000001", headers=auth)
    await assert_problem(response, 422, fields=["page", "per_page"])


async def test_a_repeated_pagination_parameter_counts_by_its_first_value(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    await make_user("bob")
    body = await (
        await client.get(f"{USERS}?page=2&page=1&per_page=1&per_page=x", headers=auth)
    ).get_json()
    assert (body["page"], body["total_pages"], [u["username"] for u in body["data"]]) == (
        2,
        2,
        ["bob"],
    )


async def test_list_past_the_last_page_is_empty_with_a_prev_page(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    body = await (await client.get(f"{USERS}?page=9", headers=auth)).get_json()
    assert body["data"] == []
    # prev_page leads back to data: the last page, not page 8 (empty too)
    assert (body["total"], body["prev_page"], body["next_page"]) == (1, 1, None)


async def _list_app(tmp_path: Path, database_url: str | None) -> Quart:
    """The service as deployed: principals cached, so a list request's SQL is its own."""
    changes: dict[str, Any] = {"auth_cache_seconds": 60.0}
    if database_url is not None:
        changes["database_url"] = database_url
    return await make_app(tmp_path, **changes)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_list_page_costs_one_sql_statement_and_past_the_end_two(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    app = await _list_app(tmp_path, url)
    async with app.test_app():
        users = [await user_maker(app)(f"user{i}") for i in range(5)]
        auth = await bearer_maker(app)(users[0])
        database: Database = app.extensions["database"]
        await database.dispose()  # connections open again while counting
        client = app.test_client()
        with sent_to(database) as sent:
            assert (await client.get(f"{USERS}?per_page=2&page=3", headers=auth)).status_code == 200
            await settled(app)
            sent.clear()  # the token lookup (cached from now on) and connection set-up
            within = await client.get(f"{USERS}?per_page=2&page=2", headers=auth)
            in_range = sent.statements()
            sent.clear()
            past = await client.get(f"{USERS}?per_page=2&page=4", headers=auth)
            past_the_end = sent.statements()
            control = sent.transaction_control()
    assert (await within.get_json())["total"] == 5
    assert len(in_range) == 1, in_range  # page and total together
    assert (await past.get_json())["data"] == []
    assert (await past.get_json())["total"] == 5
    assert len(past_the_end) == 2, past_the_end  # no row carried the total: counted apart
    if backend == "postgres":
        assert control == []  # a single statement needs no transaction around it


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_list_and_read_bodies_are_what_to_dict_gives_each_viewer(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    app = await _list_app(tmp_path, url)
    async with app.test_app():
        make = user_maker(app)
        users = [await make(f"user{i}", admin=i == 2) for i in range(4)]
        client = app.test_client()
        database: Database = app.extensions["database"]
        async with database.sessionmaker() as session:
            loaded = list(
                (await session.execute(select(User).order_by(User.created_at, User.id))).scalars()
            )
        for viewer in (users[0], users[2]):  # a user, an admin
            auth = await bearer_maker(app)(viewer)
            principal = Principal(viewer.id, viewer.is_admin, frozenset(), "token")
            expected = [user_body(user, principal) for user in loaded]
            listed = await (await client.get(USERS, headers=auth)).get_json()
            assert listed["data"] == expected
            for user, body in zip(loaded, expected, strict=True):
                read = await (await client.get(f"{USERS}/{user.id}", headers=auth)).get_json()
                assert read["data"] == body
            current = await (await client.get(f"{USERS}/current", headers=auth)).get_json()
            assert current["data"] == user_body(viewer, principal)


async def test_a_read_by_id_costs_one_sql_statement(tmp_path: Path, pg_database: str) -> None:
    app = await _list_app(tmp_path, pg_database)
    async with app.test_app():
        alice = await user_maker(app)("alice")
        auth = await bearer_maker(app)(alice)
        database: Database = app.extensions["database"]
        await database.dispose()
        client = app.test_client()
        with sent_to(database) as sent:
            assert (await client.get(f"{USERS}/current", headers=auth)).status_code == 200
            await settled(app)
            sent.clear()
            response = await client.get(f"{USERS}/{alice.id}", headers=auth)
    assert (await response.get_json())["data"]["username"] == "alice"
    assert len(sent.statements()) == 1
    assert sent.transaction_control() == []


async def test_list_against_a_stalled_database_is_503_within_the_deadline(
    tmp_path: Path, pg_database: str, postgres_server: PostgresServer
) -> None:
    app = await make_app(tmp_path, database_url=pg_database, database_timeout=0.3)
    async with app.test_app():
        auth = await bearer_maker(app)(await user_maker(app)("alice"))
        client = app.test_client()
        assert (await client.get(f"{USERS}?page=2", headers=auth)).status_code == 200
        postgres_server.pause()
        try:
            started = time.monotonic()
            response = await client.get(f"{USERS}?page=3", headers=auth)
            elapsed = time.monotonic() - started
        finally:
            postgres_server.resume()
        await assert_problem(response, 503, detail="database")
        again = await client.get(f"{USERS}?page=4", headers=auth)
    assert elapsed < 3  # the stalled server never answers: the deadline did
    assert again.status_code == 200  # the pool recovered


# -- read ------------------------------------------------------------------


async def test_get_by_id_and_current_show_email_to_the_owner_and_admins_only(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    admin = await make_user("root", admin=True)
    url = f"{USERS}/{alice.id}"
    own = (await (await client.get(url, headers=await bearer(alice))).get_json())["data"]
    other = (await (await client.get(url, headers=await bearer(bob))).get_json())["data"]
    by_admin = (await (await client.get(url, headers=await bearer(admin))).get_json())["data"]
    current = await client.get(f"{USERS}/current", headers=await bearer(alice))
    assert own["email"] == by_admin["email"] == "alice@example.org"
    assert "email" not in other
    assert "is_admin" not in other
    assert other["username"] == "alice"
    assert (await current.get_json())["data"] == own


@pytest.mark.parametrize("ref", ["not-a-uuid", "123", UNKNOWN_ID])
async def test_get_of_a_malformed_or_unknown_id_is_404(
    client: Client, make_user: MakeUser, bearer: Bearer, ref: str
) -> None:
    auth = await bearer(await make_user("alice"))
    await assert_problem(await client.get(f"{USERS}/{ref}", headers=auth), 404)


# -- update ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_partial_update_is_visible_at_once_in_the_cached_reads(
    client: Client, make_user: MakeUser, bearer: Bearer, method: str
) -> None:
    alice = await make_user("alice", email="alice@example.org")
    auth, other = await bearer(alice), await bearer(await make_user("bob"))
    url = f"{USERS}/{alice.id}"
    reads = [(url, auth), (f"{USERS}/current", auth), (USERS, auth), (url, other)]
    for read, headers in reads * 2:
        assert (await client.get(read, headers=headers)).status_code == 200
    assert (await client.get(url, headers=auth)).headers["X-Cache"] == "hit"
    response = await client.open(url, method=method, json={"full_name": "Alice A."}, headers=auth)
    assert response.status_code == 200
    assert (await response.get_json())["data"]["full_name"] == "Alice A."
    assert (await response.get_json())["data"]["email"] == "alice@example.org"
    for read, headers in reads:
        body = await (await client.get(read, headers=headers)).get_json()
        shown = body["data"][0] if read == USERS else body["data"]
        assert shown["full_name"] == "Alice A.", (read, headers is other)


async def test_admin_may_update_another_user(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    admin_auth = await bearer(await make_user("root", admin=True))
    response = await client.patch(
        f"{USERS}/{alice.id}", json={"email": "new@example.org"}, headers=admin_auth
    )
    assert response.status_code == 200
    assert (await response.get_json())["data"]["email"] == "new@example.org"


@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE"])
async def test_changing_another_users_account_is_403(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer, method: str
) -> None:
    alice = await make_user("alice")
    auth = await bearer(await make_user("mallory"))
    async with unchanged_database(app):
        response = await client.open(
            f"{USERS}/{alice.id}", method=method, json={"full_name": "pwned"}, headers=auth
        )
        await assert_problem(response, 403)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"is_admin": True}, ["is_admin"]),
        ({"id": str(uuid.uuid4())}, ["id"]),
        ({"modified_at": "2020-01-01T00:00:00+00:00"}, ["modified_at"]),
        ({"password_hash": "x"}, ["password_hash"]),
        ({"nickname": "x"}, ["nickname"]),
        ({"full_name": 3}, ["full_name"]),
        ({"username": None}, ["username"]),
        ({"username": "ab"}, ["username"]),
        ({"email": "e" * 250 + "@x.org"}, ["email"]),
        ({"password": "short"}, ["password"]),
        ({"is_admin": True, "full_name": "ok"}, ["is_admin"]),
    ],
)
async def test_update_with_invalid_fields_is_422_and_changes_nothing(
    app: Quart,
    client: Client,
    make_user: MakeUser,
    bearer: Bearer,
    body: dict[str, Any],
    fields: list[str],
) -> None:
    auth = await bearer(await make_user("alice"))
    async with unchanged_database(app):
        response = await client.patch(f"{USERS}/current", json=body, headers=auth)
        problem = await assert_problem(response, 422, fields=fields)
    assert "short" not in str(problem)


async def test_update_errors_of_the_body_are_400_415_and_413(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    url = f"{USERS}/current"
    async with unchanged_database(app):
        bad_json = await client.patch(
            url, data=b"{full_name", headers={**auth, "Content-Type": "application/json"}
        )
        await assert_problem(bad_json, 400)
        form = await client.patch(url, form={"full_name": "x"}, headers=auth)
        await assert_problem(form, 415)
        huge = await client.patch(url, json={"full_name": "x" * 70_000}, headers=auth)
        await assert_problem(huge, 413)


async def test_renaming_to_a_taken_username_is_409(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    await make_user("bob")
    auth = await bearer(await make_user("alice"))
    async with unchanged_database(app):
        response = await client.patch(f"{USERS}/current", json={"username": "BOB"}, headers=auth)
        await assert_problem(response, 409)


async def test_update_of_an_unknown_or_malformed_id_is_404(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("root", admin=True))
    async with unchanged_database(app):
        for ref in (str(uuid.uuid4()), "nope"):
            response = await client.patch(f"{USERS}/{ref}", json={"full_name": "x"}, headers=auth)
            await assert_problem(response, 404)


async def test_update_without_users_write_scope_is_403_insufficient_scope(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"), ("users:read",))
    async with unchanged_database(app):
        response = await client.patch(f"{USERS}/current", json={"full_name": "x"}, headers=auth)
        await assert_problem(response, 403)
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert "users:write" in response.headers["WWW-Authenticate"]


# -- password --------------------------------------------------------------


async def test_password_change_ends_other_sessions_and_keeps_this_one(
    app: Quart, make_user: MakeUser, bearer: Bearer
) -> None:
    await make_user("alice")
    this = await logged_in(app, "alice")
    other = await logged_in(app, "alice")
    response = await this.post(
        f"{USERS}/current/password",
        json={"old_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 204
    assert (await other.get(f"{USERS}/current")).status_code == 401
    assert (await this.get(f"{USERS}/current")).status_code == 200
    await logged_in(app, "alice", NEW_PASSWORD)
    old = await app.test_client().post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    await assert_problem(old, 401)


async def test_own_password_through_patch_is_refused_without_the_old_one(
    app: Quart, make_user: MakeUser
) -> None:
    await make_user("alice")
    this = await logged_in(app, "alice")
    response = await this.patch(f"{USERS}/current", json={"password": NEW_PASSWORD})
    body = await assert_problem(response, 422)
    assert [e["field"] for e in body["errors"]] == ["password"]
    assert NEW_PASSWORD not in await response.get_data(as_text=True)
    # Nothing changed: the old password still logs in, the session still works.
    assert (await this.get(f"{USERS}/current")).status_code == 200
    await logged_in(app, "alice")


async def test_admin_setting_a_password_ends_that_users_sessions(
    app: Quart, make_user: MakeUser
) -> None:
    bob = await make_user("bob")
    await make_user("root", admin=True)
    admin = await logged_in(app, "root")
    bobs_session = await logged_in(app, "bob")
    response = await admin.patch(f"{USERS}/{bob.id}", json={"password": NEW_PASSWORD})
    assert response.status_code == 200
    assert (await bobs_session.get(f"{USERS}/current")).status_code == 401
    assert (await admin.get(f"{USERS}/current")).status_code == 200


async def test_password_change_keeps_api_tokens_working(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    response = await client.post(
        f"{USERS}/current/password",
        json={"old_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=auth,
    )
    assert response.status_code == 204
    assert (await client.get(f"{USERS}/current", headers=auth)).status_code == 200


async def test_password_change_is_visible_at_once_in_the_cached_read(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    before = await (await client.get(f"{USERS}/current", headers=auth)).get_json()
    await client.post(
        f"{USERS}/current/password",
        json={"old_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=auth,
    )
    after = await (await client.get(f"{USERS}/current", headers=auth)).get_json()
    assert after["data"]["modified_at"] > before["data"]["modified_at"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"old_password": "wrong password", "new_password": NEW_PASSWORD}, ["old_password"]),
        ({"old_password": PASSWORD, "new_password": "short"}, ["new_password"]),
        ({"old_password": PASSWORD}, ["new_password"]),
        ({"old_password": PASSWORD, "new_password": 12345678}, ["new_password"]),
        ({"old_password": PASSWORD, "new_password": NEW_PASSWORD, "x": 1}, ["x"]),
    ],
)
async def test_password_change_with_bad_fields_is_422_and_changes_nothing(
    app: Quart,
    make_user: MakeUser,
    body: dict[str, Any],
    fields: list[str],
) -> None:
    await make_user("alice")
    client = await logged_in(app, "alice")
    async with unchanged_database(app):
        response = await client.post(f"{USERS}/current/password", json=body)
        problem = await assert_problem(response, 422, fields=fields)
    for secret in (PASSWORD, NEW_PASSWORD, "wrong password", "short"):
        assert secret not in str(problem)
    assert (await client.get(f"{USERS}/current")).status_code == 200


# -- delete ----------------------------------------------------------------


async def test_deleting_the_current_account_is_204_and_removes_its_tokens(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    await make_user("bob")
    auth = await bearer(alice)
    response = await client.delete(f"{USERS}/current", headers=auth)
    assert response.status_code == 204
    rows = await table_rows(app)
    assert [r for r in rows["users"] if r[0] == alice.id] == []
    assert len(rows["users"]) == 1
    assert rows["api_tokens"] == []
    await assert_problem(await client.get(f"{USERS}/current", headers=auth), 401)


async def test_admin_deletes_another_account_and_it_is_404_after(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    auth = await bearer(await make_user("root", admin=True))
    url = f"{USERS}/{alice.id}"
    assert (await client.get(url, headers=auth)).status_code == 200
    assert (await client.delete(url, headers=auth)).status_code == 204
    await assert_problem(await client.get(url, headers=auth), 404)
    await assert_problem(await client.delete(url, headers=auth), 404)


# -- create-or-update by username --------------------------------------------


async def test_admin_put_by_username_creates_then_updates_one_row(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("root", admin=True))
    url = f"{USERS}/by-username/carol"
    created = await client.put(url, json={"full_name": "Carol"}, headers=auth)
    assert created.status_code == 201
    updated = await client.put(
        f"{USERS}/by-username/CAROL", json={"email": "c@example.org"}, headers=auth
    )
    assert updated.status_code == 200
    first, second = (await created.get_json())["data"], (await updated.get_json())["data"]
    assert first["id"] == second["id"]
    assert (second["username"], second["full_name"], second["email"]) == (
        "carol",
        "Carol",
        "c@example.org",
    )
    assert await count(app, "users") == 2


async def test_put_by_username_with_a_password_lets_the_user_log_in(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("root", admin=True))
    response = await client.put(
        f"{USERS}/by-username/dave", json={"password": NEW_PASSWORD}, headers=auth
    )
    assert response.status_code == 201
    assert "password" not in str(await response.get_json())
    await logged_in(app, "dave", NEW_PASSWORD)


async def test_put_by_username_is_403_for_non_admins(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("alice"))
    async with unchanged_database(app):
        response = await client.put(f"{USERS}/by-username/eve", json={}, headers=auth)
        await assert_problem(response, 403, detail="admin")


@pytest.mark.parametrize(
    ("username", "body", "fields"),
    [
        ("eve", {"username": "mallory"}, ["username"]),
        ("eve", {"is_admin": True}, ["is_admin"]),
        ("eve", {"password_hash": "x"}, ["password_hash"]),
        ("eve", {"full_name": 1}, ["full_name"]),
        ("eve", {"full_name": "x" * 201}, ["full_name"]),
        ("e", {}, ["username"]),
        ("e" * 65, {}, ["username"]),
        ("eve!", {}, ["username"]),
    ],
)
async def test_put_by_username_with_invalid_fields_is_422_and_creates_nothing(
    app: Quart,
    client: Client,
    make_user: MakeUser,
    bearer: Bearer,
    username: str,
    body: dict[str, Any],
    fields: list[str],
) -> None:
    auth = await bearer(await make_user("root", admin=True))
    async with unchanged_database(app):
        response = await client.put(f"{USERS}/by-username/{username}", json=body, headers=auth)
        await assert_problem(response, 422, fields=fields)


async def test_put_by_username_body_errors_are_400_and_415(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    auth = await bearer(await make_user("root", admin=True))
    url = f"{USERS}/by-username/eve"
    async with unchanged_database(app):
        bad = await client.put(url, data=b"[", headers={**auth, "Content-Type": "application/json"})
        await assert_problem(bad, 400)
        await assert_problem(await client.put(url, data=b"{}", headers=auth), 415)


# -- scopes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", USERS, "users:read"),
        ("GET", f"{USERS}/current", "users:read"),
        ("PUT", f"{USERS}/current", "users:write"),
        ("DELETE", f"{USERS}/current", "users:write"),
        ("POST", f"{USERS}/current/password", "users:write"),
        ("PUT", f"{USERS}/by-username/eve", "users:write"),
    ],
)
async def test_a_token_without_the_routes_scope_is_403_and_anonymous_is_401(
    app: Quart,
    client: Client,
    make_user: MakeUser,
    bearer: Bearer,
    method: str,
    path: str,
    scope: str,
) -> None:
    user = await make_user("root", admin=True)
    others = tuple(s for s in ("users:read", "users:write", "tokens:write") if s != scope)
    auth = await bearer(user, others)
    async with unchanged_database(app):
        forbidden = await client.open(path, method=method, json={}, headers=auth)
        await assert_problem(forbidden, 403, detail=scope)
        challenge = forbidden.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer")
        assert 'error="insufficient_scope"' in challenge
        anonymous = await client.open(path, method=method, json={})
        await assert_problem(anonymous, 401)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_cache_hit_never_bypasses_the_scope_check(
    client: Client, make_user: MakeUser, bearer: Bearer
) -> None:
    alice = await make_user("alice")
    reader = await bearer(alice, ("users:read",))
    writer_only = await bearer(alice, ("users:write",))
    for _ in range(2):
        assert (await client.get(f"{USERS}/current", headers=reader)).status_code == 200
    await assert_problem(await client.get(f"{USERS}/current", headers=writer_only), 403)
    await assert_problem(await client.get(f"{USERS}/current"), 401)


async def test_users_routes_answer_429_past_the_api_rate_limit(tmp_path: Path) -> None:
    app = await make_app(tmp_path, api_rate_limit=RateSpec(2, 60))
    async with app.test_app():
        client = app.test_client()
        statuses = [
            (await client.post(USERS, json={"username": "x"})).status_code for _ in range(3)
        ]
        blocked = await client.post(USERS, json={"username": "x"})
    assert statuses == [422, 422, 429]
    await assert_problem(blocked, 429)
    assert int(blocked.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("email", ["é@x.org", "a\x08@b.co", ".a@b.co", "a..b@c.org"])
async def test_sign_up_refuses_an_email_outside_the_published_format(
    app: Quart, client: Client, email: str
) -> None:
    async with unchanged_database(app):
        response = await client.post(
            USERS, json={"username": "bob", "password": PASSWORD, "email": email}
        )
        await assert_problem(response, 422, fields=["email"])


@pytest.mark.parametrize("name", ["root", "ROOT", "Root"])
async def test_an_admin_cannot_set_their_own_password_through_put_by_username(
    app: Quart, client: Client, make_user: MakeUser, bearer: Bearer, name: str
) -> None:
    """A stolen admin token must not be enough to take the admin's account."""
    auth = await bearer(await make_user("root", admin=True))
    async with unchanged_database(app):
        response = await client.put(
            f"{USERS}/by-username/{name}", json={"password": NEW_PASSWORD}, headers=auth
        )
        body = await assert_problem(response, 422, fields=["password"])
    assert "/api/v1/users/current/password" in body["errors"][0]["message"]
    login = await app.test_client().post(
        "/api/v1/auth/login", json={"username": "root", "password": NEW_PASSWORD}
    )
    assert login.status_code == 401
    # The rest of one's own record, and another user's password, stay possible.
    renamed = await client.put(
        f"{USERS}/by-username/{name}", json={"full_name": "Root"}, headers=auth
    )
    assert renamed.status_code == 200
    other = await client.put(
        f"{USERS}/by-username/erin", json={"password": NEW_PASSWORD}, headers=auth
    )
    assert other.status_code == 201
