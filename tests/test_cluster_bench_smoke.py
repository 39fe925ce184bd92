"""`make cluster-bench` keeps working: its smoke version runs the whole testbed briefly.

The full run takes a quarter of an hour and is not part of the test suite; this runs
``python -m bench.cluster --smoke`` (RTT 0 and 1 ms, one 1-second round per route,
exactness across the three hosts, growth to 1,000 clients, a Cluster primary killed
under load: real Redis Cluster with replicas, Sentinel, memcached, PostgreSQL,
relays, hypercorn and wrk) and checks the report's shape and the numbers that do
not depend on this machine's speed: round trips counted, the store's own count
never admitting past the limit across hosts, no 5xx while a primary dies.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_bounded

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 480  # seconds; the smoke run itself takes about two minutes
SWEEP = ("bare", "rate_limited", "rate_limited-sentinel", "cached", "full-stack")
SEED_INSTALLED = all(
    importlib.util.find_spec(module) is not None for module in ("flask", "gunicorn", "pymemcache")
)


@pytest.mark.slow
def test_cluster_smoke_run_reports_every_section(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: `make test` installs it (apt-get install wrk)")
    code, output = run_bounded(
        ["bench.cluster", "--smoke", "--results-dir", str(tmp_path)],
        ROOT,
        TIMEOUT,
        "cluster bench smoke run",
    )
    assert code == 0, output[-4000:]
    report = json.loads((tmp_path / "cluster-smoke.json").read_text())
    assert report["error"] is None

    assert set(report["sweep"]) == {"0", "1"}
    expected = [*SWEEP, "seed"] if SEED_INSTALLED else list(SWEEP)
    if not SEED_INSTALLED:
        assert "seed" in report["meta"]["skipped"]
    for rtt, step in report["sweep"].items():
        routes = step["routes"]
        assert sorted(routes) == sorted(expected), (rtt, output[-3000:])
        for name in expected:
            route = routes[name]
            assert route["rps"] > 0, (rtt, name, route)
            assert route["errors"] == 0, (rtt, name, route)
            assert route["app_cpu_us_per_request"] > 0, (rtt, name, route)
        # The relays counted the store round trips: none for bare, some for the
        # rate limit, and for the seed its three Redis calls and one memcached get.
        assert routes["bare"]["per_request"]["redis_round_trips"] < 0.1
        assert routes["rate_limited"]["per_request"]["redis_round_trips"] > 0
        assert routes["rate_limited"]["per_request"]["evalsha"] >= 1.0
        assert routes["rate_limited-sentinel"]["per_request"]["redis_round_trips"] > 0
        assert routes["rate_limited-sentinel"]["per_request"]["evalsha"] >= 1.0
        assert routes["cached"]["per_request"]["memcached_gets"] > 0
        if SEED_INSTALLED:
            seed = routes["seed"]["per_request"]
            assert seed["get"] == pytest.approx(seed["incrby"], rel=0.05)
            assert seed["expire"] == pytest.approx(seed["incrby"], rel=0.05)
            assert seed["redis_round_trips"] >= 2.9
            assert seed["memcached_gets"] >= 0.95
    # The RTT was really added: an idle PING at 1 ms takes at least 1 ms.
    assert report["sweep"]["1"]["ping_ms"]["min"] >= 1.0

    for rtt, exact in report["exactness"].items():
        assert exact["clients"] == 200, exact
        assert exact["hosts"] == 3, exact
        assert exact["requests"] == 3 * exact["limit"], exact
        assert exact["admitted"] == exact["checked_200"] + exact["unchecked_200"], exact
        # Whatever failed open on this machine, the store's own count across the three
        # hosts never admitted past the limit.
        assert exact["over_limit_checked"] == 0, (rtt, exact)

    growth = report["growth"]
    assert [step["clients"] for step in growth["steps"]] == [100, 1000]
    assert growth["steps"][-1]["redis_keys"] >= 1000
    assert growth["steps"][-1]["bytes_per_client"] > 0
    assert growth["key_example"].endswith(":10.0.0.0}")  # a typed address key

    failover = report["failover"]["cluster"]
    assert failover["server_errors_5xx"] == 0, failover
    assert failover["promoted_after_s"] is not None, failover
    assert failover["requests"] > 0
    targets = {t["target"] for t in report["targets"]}
    assert "failover (cluster): 0 5xx" in targets
    assert any(t.startswith("exactness at 1 ms") for t in targets)
