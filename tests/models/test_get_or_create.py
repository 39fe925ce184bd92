"""get_or_create and case-insensitive usernames, on real SQLite and PostgreSQL.

Races are real: concurrent sessions on real servers. Where a test needs another
transaction to commit at one exact point (between our SELECT and our INSERT), a
`before_flush` hook runs that transaction on a second engine, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_

from quart_api.db import Database, is_retryable_error
from quart_api.models import ApiToken, User


async def count_users(database: Database) -> int:
    async with database.sessionmaker() as s:
        return int((await s.execute(select(func.count()).select_from(User))).scalar_one())


def run_once_before_flush(
    session: AsyncSession, work: Callable[[], Coroutine[Any, Any, None]]
) -> list[bool]:
    """Run `work` (on another connection) when `session` first flushes: after its
    SELECT found nothing, before its INSERT. Returns a list that records the run."""
    ran: list[bool] = []

    @event.listens_for(session.sync_session, "before_flush")
    def _interleave(_s: Session, _ctx: object, _objs: object) -> None:
        if not ran:
            ran.append(True)
            await_(work())

    return ran


async def test_usernames_differing_in_case_collide_on_plain_insert(
    database: Database,
) -> None:
    async with database.sessionmaker() as s:
        s.add(User(username="Alice"))
        await s.commit()
        s.add(User(username="alice"))
        with pytest.raises(IntegrityError):
            await s.commit()


async def test_get_or_create_finds_the_row_through_the_normalized_username(
    session: AsyncSession,
) -> None:
    alice = User(username="Alice")
    session.add(alice)
    await session.commit()
    found, created = await User.get_or_create(session, username="alice")
    assert (found.id, found.username, created) == (alice.id, "Alice", False)
    assert (await User.by_username(session, "ALICE")) is found


async def test_get_or_create_inserts_with_defaults_once(
    database: Database, session: AsyncSession
) -> None:
    user, created = await User.get_or_create(
        session, defaults={"full_name": "Bob B.", "is_admin": True}, username="Bob"
    )
    await session.commit()
    assert created
    assert (user.full_name, user.is_admin) == ("Bob B.", True)
    again, created = await User.get_or_create(session, defaults={"full_name": "X"}, username="bob")
    await session.commit()  # on SQLite an open transaction holds the write lock
    assert not created
    assert again.id == user.id
    assert again.full_name == "Bob B."
    assert await count_users(database) == 1


async def test_unknown_lookup_field_is_a_type_error(session: AsyncSession) -> None:
    with pytest.raises(TypeError, match="nickname"):
        await User.get_or_create(session, nickname="x")


async def test_100_concurrent_calls_create_exactly_one_row(database: Database) -> None:
    async def call(i: int) -> tuple[str, bool]:
        async with database.sessionmaker() as s:
            # Mixed case: every spelling is the same account.
            name = "Carol" if i % 2 else "carol"
            user, created = await User.get_or_create(s, username=name)
            await s.commit()
            return str(user.id), created

    results = await asyncio.gather(*(call(i) for i in range(100)))
    assert len({user_id for user_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await count_users(database) == 1


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_serialization_failure_is_retried_and_succeeds(database: Database) -> None:
    # Two SERIALIZABLE transactions both check that "dave" is free, the other one
    # inserts and commits first: ours fails with SQLSTATE 40001, then retries in a
    # fresh transaction that sees the committed row.
    serializable = database.engine.execution_options(isolation_level="SERIALIZABLE")
    sqlstates: list[str | None] = []

    @event.listens_for(serializable.sync_engine, "handle_error")
    def _record(ctx: Any) -> None:
        sqlstates.append(getattr(ctx.original_exception, "sqlstate", None))

    other = Database(str(database.url.render_as_string(hide_password=False)))
    rival: list[User] = []

    async def rival_commits_first() -> None:
        rival_engine = other.engine.execution_options(isolation_level="SERIALIZABLE")
        async with AsyncSession(rival_engine, expire_on_commit=False) as s2:
            assert await User.by_username(s2, "dave") is None
            rival.append(User(username="Dave"))
            s2.add(rival[0])
            await s2.commit()

    try:
        async with AsyncSession(serializable, expire_on_commit=False) as s:
            ran = run_once_before_flush(s, rival_commits_first)
            user, created = await User.get_or_create(s, username="dave")
            await s.commit()
    finally:
        await other.dispose()
    assert ran == [True]
    assert sqlstates == ["40001"]
    assert (user.id, created) == (rival[0].id, False)
    assert await count_users(database) == 1


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_collision_hidden_from_our_snapshot_is_retried_in_a_fresh_one(
    database: Database,
) -> None:
    # A READ COMMITTED rival inserts without checking first: our SERIALIZABLE INSERT
    # gets a plain unique violation, and our snapshot cannot see the row it hit.
    # get_or_create owns the transaction, so it starts a fresh one and finds it.
    serializable = database.engine.execution_options(isolation_level="SERIALIZABLE")
    other = Database(str(database.url.render_as_string(hide_password=False)))
    rival = User(username="Heidi")

    async def rival_commits_first() -> None:
        async with other.sessionmaker() as s2:
            s2.add(rival)
            await s2.commit()

    try:
        async with AsyncSession(serializable, expire_on_commit=False) as s:
            ran = run_once_before_flush(s, rival_commits_first)
            user, created = await User.get_or_create(s, username="heidi")
            await s.commit()
    finally:
        await other.dispose()
    assert ran == [True]
    assert (user.id, created) == (rival.id, False)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_failure_inside_a_callers_serializable_transaction_is_raised_cleanly(
    database: Database,
) -> None:
    # Our snapshot predates the rival's row: no retry inside it can succeed, and
    # only the caller may restart its transaction. The error is raised, and the
    # caller's transaction is still usable (rolled back to the savepoint).
    serializable = database.engine.execution_options(isolation_level="SERIALIZABLE")
    other = Database(str(database.url.render_as_string(hide_password=False)))

    async def rival_commits_first() -> None:
        rival_engine = other.engine.execution_options(isolation_level="SERIALIZABLE")
        async with AsyncSession(rival_engine) as s2:
            assert await User.by_username(s2, "ivan") is None
            s2.add(User(username="Ivan"))
            await s2.commit()

    try:
        async with AsyncSession(serializable) as s:
            await s.execute(select(1))  # the caller's transaction has begun
            run_once_before_flush(s, rival_commits_first)
            with pytest.raises(DBAPIError) as exc:
                await User.get_or_create(s, username="ivan")
            assert is_retryable_error(exc.value)
            assert (await s.execute(select(1))).scalar() == 1
    finally:
        await other.dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_locked_sqlite_is_retried_and_succeeds(database: Database) -> None:
    # Another writer holds SQLite's write lock past our busy timeout: the first
    # attempt fails with "database is locked", the retry gets the lock.
    impatient = Database(str(database.url), timeout=0.1)
    locked: list[str] = []

    @event.listens_for(impatient.engine.sync_engine, "handle_error")
    def _record(ctx: Any) -> None:
        locked.append(str(ctx.original_exception))

    holder = database.sessionmaker()
    await holder.execute(select(1))  # BEGIN IMMEDIATE: holds the write lock

    async def release_after_first_failure() -> None:
        while not locked:
            await asyncio.sleep(0.01)
        await holder.close()

    releaser = asyncio.create_task(release_after_first_failure())
    try:
        async with impatient.sessionmaker() as s:
            user, created = await User.get_or_create(s, username="erin")
            await s.commit()
    finally:
        await releaser
        await impatient.dispose()
    assert created
    assert user.username == "erin"
    assert locked
    assert all("database is locked" in message for message in locked)
    assert await count_users(database) == 1


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_collision_is_re_read_and_outer_transaction_stays_usable(
    database: Database,
) -> None:
    # READ COMMITTED: a rival commits "Frank" between our SELECT and INSERT; our
    # INSERT collides, the savepoint rolls back, and we re-read the rival's row.
    other = Database(str(database.url.render_as_string(hide_password=False)))
    rival = User(username="Frank")

    async def rival_commits_first() -> None:
        async with other.sessionmaker() as s2:
            s2.add(rival)
            await s2.commit()

    try:
        async with database.sessionmaker() as s:
            s.add(User(username="before"))
            await s.flush()
            ran = run_once_before_flush(s, rival_commits_first)
            user, created = await User.get_or_create(s, username="frank")
            s.add(User(username="after"))
            await s.commit()
    finally:
        await other.dispose()
    assert ran == [True]
    assert (user.id, created) == (rival.id, False)
    async with database.sessionmaker() as s:
        names = set((await s.execute(select(User.username))).scalars())
    assert names == {"before", "Frank", "after"}


async def test_outer_transaction_stays_usable_after_an_integrity_error(
    database: Database,
) -> None:
    # A collision on a column we did not look up by cannot be resolved by a re-read:
    # it is raised, and the caller's transaction goes on as if nothing happened.
    async with database.sessionmaker() as s:
        owner = User(username="grace")
        s.add(owner)
        await s.flush()
        token, _ = ApiToken.issue(owner.id, "first", [])
        s.add(token)
        await s.flush()
        with pytest.raises(IntegrityError):
            await ApiToken.get_or_create(
                s,
                defaults={"user_id": owner.id, "scopes": [], "token_hash": token.token_hash},
                name="second",
            )
        s.add(User(username="after"))
        await s.commit()
    async with database.sessionmaker() as s:
        names = set((await s.execute(select(User.username))).scalars())
        tokens = list((await s.execute(select(ApiToken.name))).scalars())
    assert names == {"grace", "after"}
    assert tokens == ["first"]
