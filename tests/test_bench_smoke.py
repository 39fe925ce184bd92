"""`make bench` keeps working: its smoke version runs end to end and writes its JSON.

The full benchmark takes minutes and is not part of the test suite; this runs
``python -m bench.run --smoke`` (one round of one second per route, real Redis,
memcached, PostgreSQL, hypercorn and wrk) so a change that breaks the harness, one
of the bench apps or a measured route fails here, not on the day someone measures.
The locustfile is checked to parse (importing it needs Locust, an optional extra).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.apps import USERS_PAGE_BODY
from quart_api.api.common import DEFAULT_PER_PAGE, Page, page_envelope
from quart_api.models import User
from tests.conftest import run_bounded

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds; the smoke run itself takes ~20
OWN_ROUTES = (
    "bare",
    "bare-users-body",
    "guards-installed",
    "rate_limited",
    "cached",
    "full-stack",
    "db-uncached",
)
PEER_ROUTES = {
    "quart-rate-limiter": "quart_rate_limiter",
    "quart-rate-limiter-ip": "quart_rate_limiter",
    "aiocache": "aiocache",
}


@pytest.mark.slow
def test_smoke_run_measures_every_route(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail(
            "wrk is not installed: `make test` installs it (scripts/ensure-servers.sh wrk); "
            "by hand: apt-get install wrk"
        )
    code, output = run_bounded(
        ["bench.run", "--smoke", "--results-dir", str(tmp_path)], ROOT, TIMEOUT, "bench smoke run"
    )
    assert code == 0, output[-4000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["error"] is None
    measured = {route["route"]: route for route in report["routes"]}
    expected = list(OWN_ROUTES)
    for route, module in PEER_ROUTES.items():
        if importlib.util.find_spec(module) is not None:
            expected.append(route)
        else:
            assert route in report["skipped"]
    for name in expected:
        assert name in measured, f"{name} not measured:\n{output[-3000:]}"
        route = measured[name]
        assert route["rps"] > 0, route
        assert route["socket_errors"] == 0, route
        assert route["non_2xx"] == 0, route
        if name != "bare":  # each run was compared with the bare run(s) around it
            assert route["ratio_runs"], route
        # The server's own CPU was read: what a request cost it, and how busy it was.
        assert route["server_cpu_us"] > 0, route
        assert 0 < route["server_cpu_cores"] <= 1.5, route  # one worker: at most ~a core
    assert measured["bare"]["ratio_to_bare"] == 1.0
    reference = {(r["route"], r["base"]): r for r in report["references"]}
    assert reference[("full-stack", "bare-users-body")]["medians"] > 0
    assert reference[("full-stack", "bare-users-body")]["paired"] > 0
    # The guards really ran: one rate check per request, cache hits served from memcached.
    assert measured["rate_limited"]["per_request"]["redis_evalsha_per_request"] > 0.5
    # Hits come from memcached: never more than one key a request, and concurrent
    # lookups of the hot key share one get, so usually far fewer.
    cached = measured["cached"]["per_request"]
    assert 0 < cached["memcached_gets_per_request"] <= 1.0
    assert cached["memcached_hits_per_request"] > 0
    # PostgreSQL's own CPU was read: the uncached list costs the database, a cache hit not.
    assert measured["db-uncached"]["per_request"]["database_cpu_us_per_request"] > 0


def test_a_target_holds_only_when_both_ratios_to_bare_say_so(tmp_path: Path) -> None:
    """Paired ratios cancel the host's drift; medians do not; the target takes the lower."""
    from bench.report import build_report
    from bench.routes import ROUTES

    def run(rps: float, around: float | None = None) -> dict[str, Any]:
        latency = {"p50": 1.0, "p99": 2.0}
        fields = {"rps": rps, "latency_ms": latency, "requests": int(rps), "statuses": {}}
        fields |= {"socket_errors": 0, "non_2xx": 0, "per_request": {}}
        return fields if around is None else fields | {"bare_rps_around": around}

    def report(limited: list[dict[str, Any]]) -> dict[str, Any]:
        # The machine halves its speed mid-run: bare at 3000, then 1500 req/s.
        runs = {
            "bare": [run(3000), run(3000), run(1500), run(1500), run(1500)],
            "rate_limited": limited,
        }
        return build_report(
            meta={"connections": 64}, routes=[r for r in ROUTES if r.name in runs], runs=runs,
            skipped={}, high=None, notes=[], logs=tmp_path, profiles={}, error=None,
        )  # fmt: skip

    # Always 0.96 of the bare runs around it; most of its runs fell in the fast stretch.
    built = report([run(2880, 3000), run(2880, 3000), run(1440, 1500)])
    limited = next(r for r in built["routes"] if r["route"] == "rate_limited")
    assert limited["ratio_runs"] == [0.96, 0.96, 0.96]
    assert limited["paired_ratio_to_bare"] == 0.96
    assert limited["ratio_to_bare"] == 1.92  # 2880 / 1500: flattered by the drift
    target = next(t for t in built["targets"] if t["target"] == "rate_limited >= 0.95 x bare")
    assert (target["medians"], target["paired"], target["value"]) == (1.92, 0.96, 0.96)
    assert target["ok"]
    # Paired says 0.9 (a miss), medians 1.8: the target is missed.
    built = report([run(2700, 3000), run(2700, 3000), run(1350, 1500)])
    target = next(t for t in built["targets"] if t["target"] == "rate_limited >= 0.95 x bare")
    assert target["value"] == 0.9
    assert not target["ok"]


def test_reference_body_is_shaped_like_the_full_stacks_users_page() -> None:
    """``bare-users-body`` stands for the full stack's body: same envelope, same fields."""
    body = json.loads(USERS_PAGE_BODY)
    assert set(body) == set(page_envelope([], 10_000, Page(1, 20)))
    assert len(body["data"]) == DEFAULT_PER_PAGE
    shown = {*User.__default_fields__, "email", "is_admin"}  # what an admin is shown
    assert all(set(user) == shown for user in body["data"])


def test_locustfile_parses() -> None:
    source = (ROOT / "bench" / "locustfile.py").read_text()
    tree = ast.parse(source)
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert "ApiUser" in classes
    assert "locust -f bench/locustfile.py --host http://127.0.0.1:8000" in (
        ast.get_docstring(tree) or ""
    )
