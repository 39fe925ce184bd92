"""The circuit breaker: a busy event loop is not a dead store."""

from __future__ import annotations

from quart_api.guards._breaker import Breaker
from quart_api.guards.stores import StoreError, StoreTimeout


def _late() -> StoreTimeout:
    error = StoreTimeout("redis timed out")
    error.loop_late = True
    return error


def test_timeouts_of_a_late_loop_never_open_the_breaker() -> None:
    breaker = Breaker("redis", threshold=3)
    for _ in range(10):
        breaker.failure(_late())
    assert not breaker.is_open
    assert breaker.allow()


def test_real_failures_still_open_it() -> None:
    breaker = Breaker("redis", threshold=3, clock=lambda: 0.0)
    for error in (StoreTimeout("t"), StoreError("refused"), StoreTimeout("t")):
        breaker.failure(error)
    assert breaker.is_open
    assert not breaker.allow()
