"""Password hashing with argon2id (argon2-cffi): configurable cost, bounded off-loop variants.

The cost is process-wide state on purpose: one hasher for every app in the process,
set once by the app factory from settings (`configure(...)`); tests call it with
cheap parameters. A hash carries its own parameters, so hashes made under one cost
still verify after `configure` changes it; `needs_rehash` tells when to upgrade one.

A hash costs tens of milliseconds of CPU (and tens of MiB) at production settings.
In request handlers use `ahash_password` / `averify_password`: they run in this
module's own worker threads (argon2-cffi releases the GIL), so the event loop keeps
serving other requests, and at most `slots` of them run at a time per event loop
(per worker), sized to the cores this process may use. A caller that cannot get a
slot within `queue_timeout` seconds gets :class:`PasswordHashingBusy` (the API answers
503 with ``Retry-After``) instead of queueing without end: a storm of sign-ups, logins
and password changes then costs the worker its hashing capacity, never its ability to
serve every other route. Call them outside any database transaction and deadline:
nothing else should wait while a request waits for a hash.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "DUMMY_HASH",
    "PasswordHashingBusy",
    "adummy_hash",
    "ahash_password",
    "averify_password",
    "configure",
    "configure_slots",
    "default_slots",
    "dummy_hash",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

if TYPE_CHECKING:
    DUMMY_HASH: str  # provided lazily by the module __getattr__ below

T = TypeVar("T")

#: Seconds a caller waits for a hashing slot by default, before `PasswordHashingBusy`.
DEFAULT_QUEUE_TIMEOUT = 5.0

_hasher = PasswordHasher()  # argon2-cffi defaults: RFC 9106 low-memory profile
_dummy_hash: str | None = None


class PasswordHashingBusy(Exception):
    """Every hashing slot stayed taken for the whole queue timeout; retry shortly.

    ``retry_after`` is the whole seconds a client should wait (``Retry-After``).
    """

    retry_after = 1

    def __init__(self, queue_timeout: float) -> None:
        super().__init__(
            f"no password hashing slot became free within {queue_timeout:g} s; retry shortly"
        )


def default_slots() -> int:
    """Hashes one worker runs at a time by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Slots:
    """The bound on concurrent hashes: a semaphore per event loop, one thread pool.

    A semaphore belongs to one event loop, and each worker (or test) runs its own;
    the threads are shared, sized to the bound. A slot is released when the hash's
    thread finishes, not when its request goes away: a cancelled request's hash still
    occupies a core until it ends, so it still occupies its slot.
    """

    def __init__(self, slots: int, queue_timeout: float) -> None:
        self.slots = slots
        self.queue_timeout = queue_timeout
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self._executor: ThreadPoolExecutor | None = None

    def _semaphore(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.slots)
        return semaphore

    def _threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.slots, thread_name_prefix="argon2")
        return self._executor

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphore(loop)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await semaphore.acquire()
        except TimeoutError:
            raise PasswordHashingBusy(self.queue_timeout) from None
        try:
            future = loop.run_in_executor(self._threads(), fn)
        except BaseException:
            semaphore.release()
            raise
        future.add_done_callback(functools.partial(_release, semaphore))
        # Shielded: a cancelled request stops waiting, the hash (and its slot) runs on.
        return await asyncio.shield(future)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)


def _release(semaphore: asyncio.Semaphore, future: asyncio.Future[Any]) -> None:
    semaphore.release()
    if not future.cancelled():
        future.exception()  # retrieved: nobody may be left to await a cancelled request's


_slots = _Slots(default_slots(), DEFAULT_QUEUE_TIMEOUT)


def configure(time_cost: int, memory_cost: int, parallelism: int) -> None:
    """Set the argon2id cost for new hashes.

    Args:
        time_cost: iterations.
        memory_cost: KiB of memory per hash (at least 8 * parallelism).
        parallelism: lanes/threads per hash.
    """
    global _hasher, _dummy_hash
    for name, value in (
        ("time_cost", time_cost),
        ("memory_cost", memory_cost),
        ("parallelism", parallelism),
    ):
        _check_positive_int(f"argon2 {name}", value)
    if memory_cost < 8 * parallelism:
        raise ValueError(
            f"argon2 memory_cost must be at least 8 * parallelism ({8 * parallelism}), "
            f"got {memory_cost}"
        )
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    # The dummy hash must cost what a real one costs, or timing tells users apart.
    _dummy_hash = None


def configure_slots(slots: int | None = None, queue_timeout: float = DEFAULT_QUEUE_TIMEOUT) -> None:
    """Bound the async variants: ``slots`` hashes at a time per event loop.

    Args:
        slots: concurrent hashes per worker (default: :func:`default_slots`).
        queue_timeout: seconds a caller waits for a slot before
            :class:`PasswordHashingBusy`.
    """
    global _slots
    slots = default_slots() if slots is None else slots
    _check_positive_int("password hashing slots", slots)
    if isinstance(queue_timeout, bool) or not queue_timeout > 0:
        raise ValueError(
            f"password hashing queue_timeout must be positive seconds, got {queue_timeout!r}"
        )
    if (slots, float(queue_timeout)) == (_slots.slots, _slots.queue_timeout):
        return
    _slots.close()
    _slots = _Slots(slots, float(queue_timeout))


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def hash_password(password: str) -> str:
    """Return an argon2id hash (PHC string with salt and parameters) of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when `password` matches `password_hash`.

    Never raises on a mismatch or a malformed/foreign hash (for example an empty or
    legacy value in the column): both are simply `False`.
    """
    return _verify(_hasher, password_hash, password)


def _verify(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the current ones
    (re-hash it after a successful login). Malformed hashes need one too."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


async def ahash_password(password: str) -> str:
    """`hash_password` in a hashing slot, off the event loop.

    Raises :class:`PasswordHashingBusy` when no slot frees up within the queue timeout.
    """
    return await _slots.run(functools.partial(_hasher.hash, password))


async def averify_password(password_hash: str, password: str) -> bool:
    """`verify_password` in a hashing slot, off the event loop.

    Raises :class:`PasswordHashingBusy` when no slot frees up within the queue timeout.
    """
    return await _slots.run(functools.partial(_verify, _hasher, password_hash, password))


def dummy_hash() -> str:
    """A hash at the current cost, of a random password nobody knows.

    Verify the submitted password against it when the username is unknown, so an
    unknown user costs as much time as a wrong password (no user enumeration by
    timing). Computed on first use and again after `configure`.
    """
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(32))
    return _dummy_hash


async def adummy_hash() -> str:
    """`dummy_hash` made in a hashing slot: call it before serving, so the first login
    of an unknown user does not hash on the event loop."""
    return await _slots.run(dummy_hash)


def __getattr__(name: str) -> Any:
    # `passwords.DUMMY_HASH` is computed lazily (module __getattr__, PEP 562). Read
    # it as an attribute at call time; `from ... import DUMMY_HASH` freezes the
    # value of that moment, possibly before `configure`.
    if name == "DUMMY_HASH":
        return dummy_hash()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
