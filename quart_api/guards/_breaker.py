"""Fail open, quickly: a circuit breaker in front of each store.

A dead store costs every request its timeout until something stops asking.
After ``threshold`` consecutive failures the breaker opens and calls are
skipped (the guard fails open) for ``cooldown`` seconds; then one probe is let
through: success closes it, failure opens it again. With the default one-second
cooldown, service is whole again within about a second of the store's return.
Errors are logged at most once per ``log_interval`` per store, with the number
suppressed, so an outage does not flood the logs.

A timeout whose reply had arrived but was not read in time (``StoreTimeout.loop_late``:
the worker's event loop was too busy, the store was not slow) fails that one call open
but never counts towards opening the breaker: skipping a healthy store for a second
would let a whole second of requests through unchecked exactly at peak load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from quart_api.guards import _metrics
from quart_api.guards.stores.base import StoreTimeout

__all__ = ["Breaker"]

log = logging.getLogger("quart_api.guards")

_CLOSED, _OPEN, _PROBING = 0, 1, 2


class Breaker:
    """Per-store breaker; cheap on the happy path (one int comparison)."""

    __slots__ = (
        "_clock",
        "_failures",
        "_last_log",
        "_open_until",
        "_state",
        "_suppressed",
        "cooldown",
        "log_interval",
        "name",
        "threshold",
    )

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 3,
        cooldown: float = 1.0,
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self.log_interval = log_interval
        self._clock = clock
        self._state = _CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._last_log = -float("inf")
        self._suppressed = 0

    @property
    def is_open(self) -> bool:
        return self._state != _CLOSED

    def allow(self) -> bool:
        """May a call go to the store now?"""
        if self._state == _CLOSED:
            return True
        now = self._clock()
        if now >= self._open_until:
            # One probe per cooldown. A probe that never reports back (its request was
            # cancelled: the client went away) must not keep every later call skipped,
            # so a probe unanswered for a cooldown lets the next one through.
            self._state = _PROBING
            self._open_until = now + self.cooldown
            return True
        _metrics.STORE_SKIPPED.labels(self.name).inc()
        return False

    def success(self) -> None:
        if self._state != _CLOSED or self._failures:
            if self._state != _CLOSED:
                log.warning("%s store answers again; guards back in service", self.name)
                _metrics.BREAKER_OPEN.labels(self.name).set(0)
            self._state = _CLOSED
            self._failures = 0

    def failure(self, error: BaseException) -> None:
        _metrics.STORE_ERRORS.labels(self.name).inc()
        if isinstance(error, StoreTimeout) and error.loop_late:
            _metrics.STORE_LATE_LOOP.labels(self.name).inc()
            self._log(error)
            return
        self._failures += 1
        now = self._clock()
        if self._state == _PROBING or self._failures >= self.threshold:
            if self._state == _CLOSED:
                _metrics.BREAKER_OPEN.labels(self.name).set(1)
            self._state = _OPEN
            self._open_until = now + self.cooldown
        self._log(error)

    def _log(self, error: BaseException) -> None:
        """One log line per ``log_interval``, counting the ones left out."""
        now = self._clock()
        if now - self._last_log >= self.log_interval:
            extra = f" ({self._suppressed} similar errors not logged)" if self._suppressed else ""
            log.error(
                "%s store failed, guards fail open: %s: %s%s",
                self.name,
                type(error).__name__,
                error,
                extra,
            )
            self._last_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1
