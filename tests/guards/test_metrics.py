"""The guards' Prometheus counters are optional: without prometheus-client they are no-ops."""

from __future__ import annotations

import functools
import subprocess
import sys

from quart_api.guards import _metrics


def test_with_prometheus_client_the_counters_are_real() -> None:
    from prometheus_client import REGISTRY

    assert _metrics.ENABLED
    before = REGISTRY.get_sample_value(
        "quart_api_rate_limit_requests_total", {"decision": "limited"}
    )
    _metrics.RATE_LIMITED.inc()
    after = REGISTRY.get_sample_value(
        "quart_api_rate_limit_requests_total", {"decision": "limited"}
    )
    assert after == (before or 0) + 1


def test_the_hot_counters_add_one_to_the_same_samples() -> None:
    from prometheus_client import REGISTRY

    for count, name, labels in (
        (
            _metrics.count_rate_allowed,
            "quart_api_rate_limit_requests_total",
            {"decision": "allowed"},
        ),
        (_metrics.count_cache_hit, "quart_api_cache_requests_total", {"result": "hit"}),
    ):
        before = REGISTRY.get_sample_value(name, labels) or 0
        count()
        assert REGISTRY.get_sample_value(name, labels) == before + 1


def test_prometheus_client_counters_still_keep_their_value_in__value() -> None:
    """The hot counters add to ``_value`` directly; without it they would call ``inc``."""
    assert callable(_metrics.RATE_ALLOWED._value.inc)
    assert isinstance(_metrics.count_rate_allowed, functools.partial)


def test_without_prometheus_client_the_guards_import_and_guard() -> None:
    """``pip install quart-api`` without the metrics extra: the same guards, no counters."""
    code = """
import asyncio, sys
sys.modules["prometheus_client"] = None  # as if it were not installed: import fails
from quart import Quart
from quart_api.guards import Guards, rate_limited, _metrics
assert not _metrics.ENABLED
app = Quart("no_metrics")
Guards(app)

@app.get("/")
@rate_limited(limit=1, minutes=1)
async def index():
    return "ok"

async def main():
    async with app.test_app() as test_app:
        client = test_app.test_client()
        print((await client.get("/")).status_code, (await client.get("/")).status_code)

asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith("prometheus")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["200 429", "['prometheus_client']"]
