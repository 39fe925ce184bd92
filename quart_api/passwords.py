"""Password hashing with argon2id (argon2-cffi), configurable cost, off-loop variants.

The cost is process-wide state on purpose: one hasher for every app in the process,
set once by the app factory from settings (`configure(...)`); tests call it with
cheap parameters. A hash carries its own parameters, so hashes made under one cost
still verify after `configure` changes it; `needs_rehash` tells when to upgrade one.

A hash costs tens of milliseconds of CPU at production settings: in request
handlers use `ahash_password` / `averify_password`, which run it in a worker thread
(argon2-cffi releases the GIL), so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "DUMMY_HASH",
    "ahash_password",
    "averify_password",
    "configure",
    "dummy_hash",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

if TYPE_CHECKING:
    DUMMY_HASH: str  # provided lazily by the module __getattr__ below

_hasher = PasswordHasher()  # argon2-cffi defaults: RFC 9106 low-memory profile
_dummy_hash: str | None = None


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
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"argon2 {name} must be a positive integer, got {value!r}")
    if memory_cost < 8 * parallelism:
        raise ValueError(
            f"argon2 memory_cost must be at least 8 * parallelism ({8 * parallelism}), "
            f"got {memory_cost}"
        )
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    # The dummy hash must cost what a real one costs, or timing tells users apart.
    _dummy_hash = None


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
    """`hash_password` in a worker thread, so the event loop is not blocked."""
    return await asyncio.to_thread(_hasher.hash, password)


async def averify_password(password_hash: str, password: str) -> bool:
    """`verify_password` in a worker thread, so the event loop is not blocked."""
    return await asyncio.to_thread(_verify, _hasher, password_hash, password)


def dummy_hash() -> str:
    """A hash at the current cost, of a random password nobody knows.

    Verify the submitted password against it when the username is unknown, so an
    unknown user costs as much time as a wrong password (no user enumeration by
    timing). Computed on first use and again after `configure`.
    """
    global _dummy_hash
    if _dummy_hash is None:
        import secrets

        _dummy_hash = _hasher.hash(secrets.token_urlsafe(32))
    return _dummy_hash


def __getattr__(name: str) -> Any:
    # `passwords.DUMMY_HASH` is computed lazily (module __getattr__, PEP 562). Read
    # it as an attribute at call time; `from ... import DUMMY_HASH` freezes the
    # value of that moment, possibly before `configure`.
    if name == "DUMMY_HASH":
        return dummy_hash()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
