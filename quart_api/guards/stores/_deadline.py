"""A store-call timeout that blames the store only for what the store did.

Under load one event-loop turn can take tens of milliseconds. A plain
``asyncio.timeout`` then expires calls whose reply had arrived in time, because the
loop had not yet read it, and calls that could not even open their connection because
the loop did not get round to it: the guard fails open, and the breaker skips a
healthy store for a second, exactly at peak load. :class:`Deadline` judges the store:

- the caller starts the clock when the command is written (``reschedule``), so time
  spent waiting to be scheduled is not the store's;
- at expiry, when ``delivered()`` says a reply sits unread in the socket (the store
  answered, the loop is late), or the expiry itself runs late by more than half the
  delay (the loop was busy through most of it, so the store did not get its time),
  the deadline is extended by one more delay, as long as the extensions stay within
  ``grace``;
- past that, the call times out; ``loop_late`` then tells whether a reply was waiting
  unread, i.e. whether the timeout was the loop's doing rather than the store's.

A store that does not answer on a loop that is not late times out after ``delay``;
on a late loop after at most ``delay + grace``: a dead store never hangs a request.

The expiry itself is deferred by one ``call_soon``: wake-ups that the same turn's I/O
callbacks queued run first, so a reply read in that turn wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

__all__ = ["Deadline"]


def _never() -> bool:
    return False


class Deadline:
    """``async with Deadline(seconds, delivered=..., grace=...) as d:`` like ``asyncio.timeout``.

    ``d.reschedule(when)`` moves the expiry (loop time); ``d.loop_late`` after a
    timeout: a reply had arrived unread.
    """

    __slots__ = (
        "_delay",
        "_delivered",
        "_due",
        "_extended",
        "_grace",
        "_handle",
        "_loop",
        "_timeout",
        "loop_late",
    )

    def __init__(
        self, delay: float, *, delivered: Callable[[], bool] = _never, grace: float = 0.0
    ) -> None:
        self._delay = delay
        self._delivered = delivered
        self._grace = grace
        self._extended = 0.0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout: asyncio.Timeout | None = None
        self.loop_late = False

    async def __aenter__(self) -> Deadline:
        self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        self.reschedule(self._loop.time() + self._delay)
        return self

    def reschedule(self, when: float, delay: float | None = None) -> None:
        """Expire at loop time ``when``; ``delay``: the bound from now on (extensions)."""
        if self._loop is None:
            raise RuntimeError("use Deadline with async with")
        if delay is not None:
            self._delay = delay
        if self._handle is not None:
            self._handle.cancel()
        self._due = when
        self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._handle = None
        loop, timeout = self._loop, self._timeout
        if loop is None or timeout is None:
            return
        now = loop.time()
        delivered = self._delivered()
        late = now - self._due > self._delay / 2
        if (delivered or late) and self._extended + self._delay <= self._grace:
            self._extended += self._delay
            self.reschedule(now + self._delay)
            return
        self.loop_late = delivered
        # Due now: asyncio.Timeout queues its cancellation with call_soon, behind the
        # wake-ups this turn's I/O callbacks already queued.
        timeout.reschedule(now)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._timeout is not None:
            await self._timeout.__aexit__(exc_type, exc, tb)
