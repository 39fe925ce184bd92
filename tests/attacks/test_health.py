"""Attacks on the probes: ``/readyz`` is open to anyone and asks the database.

A flood of readiness probes must not cost a database round trip (and, against a
stalled database, a pooled connection held for ``DATABASE_TIMEOUT``) each: probes
that arrive while a check runs share its answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from quart import request
from sqlalchemy import event

from quart_api.db import Database
from tests.api.conftest import make_app

PROBES = 50


async def test_fifty_concurrent_readiness_probes_cost_one_database_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first probe's check is held before it reaches the database until all 50
    probes have arrived; then every probe answers 200 from one query."""
    app = await make_app(tmp_path)
    database: Database = app.extensions["database"]
    gate = asyncio.Event()
    statements: list[str] = []
    arrived = 0
    read_revisions = database.schema_revisions

    async def held_schema_revisions() -> frozenset[str]:
        await asyncio.wait_for(gate.wait(), timeout=10)  # bounded: a failing test ends
        return await read_revisions()

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if not statement.startswith(("BEGIN", "ROLLBACK", "COMMIT")):
            statements.append(statement)

    @app.before_request
    async def count_arrivals() -> None:
        nonlocal arrived
        if request.path == "/readyz":
            arrived += 1

    monkeypatch.setattr(database, "schema_revisions", held_schema_revisions)
    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with app.test_app():
            client = app.test_client()
            probes = [asyncio.ensure_future(client.get("/readyz")) for _ in range(PROBES)]
            for _ in range(2000):
                if arrived == PROBES:
                    break
                await asyncio.sleep(0.005)
            for _ in range(20):  # the last arrivals reach the check they share
                await asyncio.sleep(0.005)
            gate.set()
            responses = await asyncio.gather(*probes)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)
    assert [r.status_code for r in responses] == [200] * PROBES
    assert statements == ["SELECT version_num FROM alembic_version"]
