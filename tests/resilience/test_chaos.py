"""``make chaos``, short: every backend fault of the scenario, two seconds a phase.

``python -m bench.chaos --short`` in a subprocess: Redis stopped and started,
memcached stopped and started, PostgreSQL paused (SIGSTOP, with its backends) and
resumed, under wrk load on the full-stack route and probes on a database route,
against its own servers. Its exit code is its verdict; the JSON it writes says
which requirement held. Here so that a change that breaks failing open, the
database deadline or the recovery after a backend's return fails the test suite,
not only a manual ``make chaos``. Beside it, two bugs the chaos run found, pinned
in-process: a breaker wedged by a cancelled probe, a stalled pool ping answering late.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bench.serve import ROOT
from quart_api.db import Database, DatabaseUnavailable
from quart_api.guards import StoreError
from quart_api.guards._breaker import Breaker
from quart_api.testing import PostgresServer
from tests.conftest import run_bounded

pytestmark = pytest.mark.slow

TIMEOUT = 120  # seconds; the short run itself takes about 20


def test_short_chaos_run_holds_every_requirement(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: `make test` installs it; by hand: apt-get install wrk")
    code, output = run_bounded(
        ["bench.chaos", "--short", "--results-dir", str(tmp_path)], ROOT, TIMEOUT, "chaos --short"
    )
    report = json.loads((tmp_path / "chaos.json").read_text())
    assert report["error"] is None, output[-4000:]
    assert [p["phase"] for p in report["phases"]] == [
        "baseline",
        "redis-down",
        "redis-back",
        "memcached-down",
        "memcached-back",
        "pg-paused",
        "pg-back",
    ]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, output[-4000:]
    assert len(report["checks"]) == 10
    assert code == 0, output[-4000:]


def test_a_probe_that_never_reports_back_does_not_wedge_the_breaker() -> None:
    """Found by the chaos run: Redis came back, yet rate limits stayed off for good.

    After the cooldown one request probes the dead store. If that request is
    cancelled (its client went away: wrk ending a phase, any client timeout), the
    probe reports neither success nor failure; the breaker must still let another
    probe through a cooldown later, or the guards fail open until a restart.
    """
    now = [0.0]
    breaker = Breaker("redis", threshold=1, cooldown=1.0, clock=lambda: now[0])
    breaker.failure(StoreError("connection refused"))
    assert not breaker.allow()
    now[0] = 1.0
    assert breaker.allow(), "the probe goes through"
    assert not breaker.allow(), "one probe at a time"
    # ... and that probe's request is cancelled: no success(), no failure().
    now[0] = 2.0
    assert breaker.allow(), "another probe, a cooldown later"
    breaker.success()
    assert not breaker.is_open


class _StallOnPing:
    """An asyncpg connection whose server stalls just as the pool's ping query goes out.

    That is the moment the bug needs: the ping's query unanswered (when the ping ran in
    a transaction, that transaction already begun). Everything else passes through to
    the real connection.
    """

    def __init__(self, connection: Any, stall: Callable[[], None]) -> None:
        self._connection = connection
        self._stall = stall

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        if query == "SELECT 1" and not args:  # the ping
            self._stall()
        return await self._connection.execute(query, *args, **kwargs)


async def test_a_ping_cut_short_by_a_stall_answers_within_the_timeout(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    """Found by the chaos run: requests whose connection was being pinged by the pool
    when PostgreSQL stalled answered 503 after twice DATABASE_TIMEOUT.

    Cut short by the deadline, SQLAlchemy's ping still waited, in a ``finally``,
    for a ROLLBACK from the stalled server (asyncpg's own timeout: DATABASE_TIMEOUT).
    """
    timeout = 1.0
    database = Database(pg_database, timeout=timeout, ping_after_idle=0)  # pings every checkout
    try:
        async with database.engine.connect() as connection:  # pooled: pinged when reused
            raw = await connection.get_raw_connection()
            adapter: Any = raw.dbapi_connection
            adapter._connection = _StallOnPing(adapter._connection, postgres_server.pause)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            async with database.deadline(), database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        elapsed = time.monotonic() - started
    finally:
        postgres_server.resume()
        await database.dispose()
    assert postgres_server.running
    # The bug answered after two timeouts; one timeout plus a loaded machine's slack is fine.
    assert elapsed < 1.7 * timeout, f"answered after {elapsed:.2f} s"
