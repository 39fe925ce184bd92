"""Prometheus counters of the guards, when ``prometheus-client`` is installed.

The guards need no metrics library: ``pip install quart-api`` leaves it out, and then
every counter here is a no-op of the same shape. ``pip install "quart-api[metrics]"``
(the service installs it) makes them real. They are defined once at import
(prometheus_client's registry is process-global); with ``PROMETHEUS_MULTIPROC_DIR``
set, prometheus_client writes them to per-process files that an app's ``/metrics``
aggregates across workers. Label children used on the hot path are resolved once
here, not per request.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

__all__ = [
    "BREAKER_OPEN",
    "CACHE",
    "CACHE_BYPASS",
    "CACHE_HIT",
    "CACHE_MISS",
    "CACHE_STALE",
    "ENABLED",
    "PROTECT_BLOCKED",
    "PROTECT_FAILURES",
    "RATE_ALLOWED",
    "RATE_LIMITED",
    "STORE_ERRORS",
    "STORE_LATE_LOOP",
    "STORE_SKIPPED",
    "count_cache_hit",
    "count_rate_allowed",
]


class _NoMetric:
    """Stands in for a counter or gauge (and its label children) without prometheus_client."""

    __slots__ = ()

    def labels(self, *values: str) -> _NoMetric:
        return self

    def inc(self, amount: float = 1) -> None:
        """Nothing to count."""

    def set(self, value: float) -> None:
        """Nothing to set."""


Counter: Any
Gauge: Any
try:
    from prometheus_client import Counter, Gauge
except ImportError:  # the guards alone: `pip install quart-api` without [metrics]
    ENABLED = False

    def Counter(*args: Any, **kwargs: Any) -> _NoMetric:
        return _NoMetric()

    Gauge = Counter
else:
    ENABLED = True

CACHE = Counter("quart_api_cache_requests", "Cached-route lookups by result", ["result"])
CACHE_HIT = CACHE.labels("hit")
CACHE_MISS = CACHE.labels("miss")
CACHE_STALE = CACHE.labels("stale")
CACHE_BYPASS = CACHE.labels("bypass")

RATE = Counter("quart_api_rate_limit_requests", "Rate-limited requests by decision", ["decision"])
RATE_ALLOWED = RATE.labels("allowed")
RATE_LIMITED = RATE.labels("limited")

PROTECT_BLOCKED = Counter(
    "quart_api_protected_blocks", "Requests refused because the client is banned"
)
PROTECT_FAILURES = Counter(
    "quart_api_protected_failures", "Failure responses counted towards a ban"
)

STORE_ERRORS = Counter("quart_api_store_errors", "Store calls that failed or timed out", ["store"])
STORE_LATE_LOOP = Counter(
    "quart_api_store_late_loop",
    "Store calls that timed out with their reply delivered but unread (a busy event loop)",
    ["store"],
)
STORE_SKIPPED = Counter(
    "quart_api_store_skipped", "Store calls skipped while the breaker is open", ["store"]
)
BREAKER_OPEN = Gauge(
    "quart_api_breaker_open",
    "1 while a store's circuit breaker is open",
    ["store"],
    multiprocess_mode="max",
)


def _hot(counter: Any) -> Callable[[], None]:
    """``counter.inc()`` for a counter bumped on every request.

    A prometheus_client counter's ``inc`` checks its labels and the amount, then adds
    to its value (``_value.inc``, the one internal used here: checked on 0.26,
    ``tests/guards/test_metrics.py`` fails by name when it moves); the checks cannot
    fail for a child resolved at import, so the hot path adds to the value directly.
    """
    value_inc = getattr(getattr(counter, "_value", None), "inc", None)
    if value_inc is None:
        return counter.inc  # type: ignore[no-any-return]
    return partial(value_inc, 1)


#: ``RATE_ALLOWED.inc`` and ``CACHE_HIT.inc``, on the hot path
count_rate_allowed = _hot(RATE_ALLOWED)
count_cache_hit = _hot(CACHE_HIT)
