"""Deadline: a reply that arrived in the same loop turn as the timeout wins."""

from __future__ import annotations

import asyncio
import time

import pytest

from quart_api.guards.stores._deadline import Deadline


async def _reply_due_with_the_timeout(timeout_cm: type[Deadline] | object) -> str:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    when = loop.time() + 0.02
    # The reply's I/O callback and the deadline come due in the same loop turn,
    # as they do when the loop is busy and both were late.
    loop.call_at(when, reply.set_result, "answer")
    async with timeout_cm(0.02):  # type: ignore[operator]
        return await reply


async def test_plain_asyncio_timeout_blames_the_store_for_a_late_loop() -> None:
    with pytest.raises(TimeoutError):
        await _reply_due_with_the_timeout(asyncio.timeout)


async def test_deadline_lets_a_reply_that_already_arrived_win() -> None:
    assert await _reply_due_with_the_timeout(Deadline) == "answer"


async def test_deadline_still_times_out_a_store_that_never_answers() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with Deadline(0.02):
            await never
    assert loop.time() - started < 1.0


async def test_deadline_reschedule_extends_the_bound() -> None:
    loop = asyncio.get_running_loop()
    async with Deadline(0.01) as deadline:
        deadline.reschedule(loop.time() + 0.2)
        await asyncio.sleep(0.05)


async def test_deadline_waits_for_a_reply_that_arrived_but_is_unread() -> None:
    """At expiry, bytes waiting in the socket mean the store answered: not a timeout."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    waiting = [True]
    loop.call_at(loop.time() + 0.05, reply.set_result, "answer")  # read a turn too late
    async with Deadline(0.02, delivered=lambda: waiting[0], grace=0.5) as deadline:
        assert await reply == "answer"
    assert not deadline.loop_late


async def test_deadline_grace_for_an_unread_reply_is_bounded() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    deadline = Deadline(0.02, delivered=lambda: True, grace=0.06)
    with pytest.raises(TimeoutError):
        async with deadline:
            await never
    assert deadline.loop_late, "the timeout was the loop's doing, not the store's"


async def test_deadline_blames_the_store_when_nothing_arrived() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    deadline = Deadline(0.02, delivered=lambda: False, grace=0.5)
    with pytest.raises(TimeoutError):
        async with deadline:
            await never
    assert not deadline.loop_late


async def test_deadline_gives_the_store_more_time_when_its_expiry_ran_late() -> None:
    """The loop held for longer than the delay: the store gets its delay once more."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    async with Deadline(0.02, grace=0.1) as deadline:
        loop.call_soon(time.sleep, 0.05)  # the loop is blocked past the expiry
        loop.call_later(0.06, reply.set_result, "answer")
        assert await reply == "answer"
    assert not deadline.loop_late
