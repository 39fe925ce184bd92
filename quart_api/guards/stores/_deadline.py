"""A store-call timeout that does not blame the store for a busy event loop.

Under load one event-loop turn can take tens of milliseconds. When a reply and
a timeout become due in the same turn, ``asyncio.timeout`` cancels the waiting
task before the task gets to read the reply that already arrived: the store
answered in time, the loop was late, and the guard fails open (and trips the
circuit breaker) exactly at peak load.

:class:`Deadline` defers the expiry by one ``call_soon``: wake-ups that the
same turn's I/O callbacks queued run first, so a reply that has arrived wins,
and a store that has not answered still times out one turn later.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["Deadline"]


class Deadline:
    """``async with Deadline(seconds) as d:`` like ``asyncio.timeout``; ``d.reschedule(when)``."""

    __slots__ = ("_delay", "_handle", "_loop", "_timeout")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> Deadline:
        self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        self.reschedule(self._loop.time() + self._delay)
        return self

    def reschedule(self, when: float) -> None:
        """Expire at loop time ``when`` (plus the one-turn grace)."""
        assert self._loop is not None, "use Deadline with async with"
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._handle = None
        if self._timeout is not None and self._loop is not None:
            # Due now: asyncio.Timeout queues its cancellation with call_soon, behind
            # the wake-ups this turn's I/O callbacks already queued.
            self._timeout.reschedule(self._loop.time())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        assert self._timeout is not None
        await self._timeout.__aexit__(exc_type, exc, tb)
