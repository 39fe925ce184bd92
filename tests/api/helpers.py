"""Assertions the API tests share: problem+json bodies and an unchanged database."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from quart import Quart
from quart.typing import TestClientProtocol as Client
from quart.wrappers import Response
from sqlalchemy import select

from quart_api.db import Base, Database
from tests.api.conftest import PASSWORD

# Changes when a token is used (written after the response): not a change a request makes.
_VOLATILE_COLUMNS = frozenset({"last_used_at"})


async def assert_problem(
    response: Response, status: int, *, fields: Iterable[str] = (), detail: str | None = None
) -> dict[str, Any]:
    """`response` is an RFC 9457 problem of `status` naming `fields` (and `detail`)."""
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.get_json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    named = list(fields)
    if named:
        assert {e["field"] for e in body["errors"]} >= set(named), body
        assert all(e["message"] for e in body["errors"])
    if detail is not None:
        assert detail.lower() in body["detail"].lower(), body
    return body


async def table_rows(app: Quart) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (volatile columns left out), in primary-key order."""
    database: Database = app.extensions["database"]
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with database.sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if c.name not in _VOLATILE_COLUMNS]
            query = select(*columns).order_by(*table.primary_key.columns)
            rows[table.name] = [tuple(r) for r in (await session.execute(query)).all()]
    return rows


@asynccontextmanager
async def unchanged_database(app: Quart) -> AsyncIterator[None]:
    """Assert the enclosed requests leave every table exactly as it was."""
    before = await table_rows(app)
    yield
    after = await table_rows(app)
    changed = {t: (before[t], after[t]) for t in before if before[t] != after[t]}
    assert not changed, f"the database changed: {changed}"


async def count(app: Quart, table: str) -> int:
    return len((await table_rows(app))[table])


async def logged_in(app: Quart, username: str, password: str = PASSWORD) -> Client:
    """A test client holding a session cookie of `username`."""
    client = app.test_client()
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    return client


def session_cookie(client: Client) -> str:
    """The raw value of the client's session cookie."""
    jar = client.cookie_jar  # type: ignore[attr-defined]
    return next(c.value for c in jar if c.name == "QUART_AUTH")


class GatedHasher:
    """The app's argon2 hasher behind a gate the test opens: hashes and verifies start,
    then wait (in their worker threads) until ``open()``; counts how many run at once.

    Install with ``monkeypatch.setattr(passwords, "_hasher", GatedHasher(passwords._hasher))``.
    """

    def __init__(self, hasher: Any) -> None:
        self._hasher = hasher
        #: a hash made before the gate, for verifies (``DUMMY_HASH`` would be made at it)
        self.sample_hash: str = hasher.hash("sample password")
        self._gate = threading.Event()
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0

    def open(self) -> None:
        self._gate.set()

    def _through_gate(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            # Bounded: a failing test must not leave a thread waiting for ever.
            self._gate.wait(timeout=60)
            return call(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1

    def hash(self, password: str | bytes, **kwargs: Any) -> str:
        digest: str = self._through_gate(self._hasher.hash, password, **kwargs)
        return digest

    def verify(self, password_hash: str | bytes, password: str | bytes) -> bool:
        valid: bool = self._through_gate(self._hasher.verify, password_hash, password)
        return valid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hasher, name)

    async def wait_running(self, count: int) -> None:
        """Until ``count`` calls wait at the gate (bounded: fails after 2,000 loop turns)."""
        for _ in range(2000):
            if self.running >= count:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{self.running} hashes reached the gate, expected {count}")


async def settled(app: Quart) -> None:
    """Wait for the work done after responses (a token's last-use stamp): not a read's SQL."""
    while app.background_tasks:
        await asyncio.gather(*app.background_tasks)
