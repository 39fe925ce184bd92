"""Prometheus counters of the guards.

Defined once at import (prometheus_client's registry is process-global); with
``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client writes them to per-process
files that the service's ``/metrics`` aggregates across workers. Label children
used on the hot path are resolved once here, not per request. Without
prometheus-client (``pip install "quart-api[metrics]"`` brings it) they count nothing.
"""

from __future__ import annotations

from typing import Any, Self

try:
    from prometheus_client import Counter, Gauge
except ModuleNotFoundError:

    class Counter:  # type: ignore[no-redef]
        """Stands in for prometheus-client's metrics when it is not installed."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def labels(self, *values: str) -> Self:
            return self

        def inc(self, amount: float = 1) -> None:
            pass

        def set(self, value: float) -> None:
            pass

    Gauge = Counter  # type: ignore[misc,assignment]

__all__ = [
    "BREAKER_OPEN",
    "CACHE",
    "CACHE_HIT",
    "CACHE_MISS",
    "CACHE_STALE",
    "PROTECT_BLOCKED",
    "PROTECT_FAILURES",
    "RATE_ALLOWED",
    "RATE_LIMITED",
    "STORE_ERRORS",
    "STORE_SKIPPED",
]

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
STORE_SKIPPED = Counter(
    "quart_api_store_skipped", "Store calls skipped while the breaker is open", ["store"]
)
BREAKER_OPEN = Gauge(
    "quart_api_breaker_open",
    "1 while a store's circuit breaker is open",
    ["store"],
    multiprocess_mode="max",
)
