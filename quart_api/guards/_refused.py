"""Clients this process refused lately, so their next requests start no early cache lookup.

A cached endpoint starts its memcached lookup together with the limit check
(``_cache.start_lookup``), so a hit waits for one round trip instead of two. A
refused request's lookup is wasted: without this memory, a flood of refused
requests would cost memcached one key each. A client refused here (its address
key, and its user key when known) is looked up only after its check allows it,
until its ``Retry-After`` has passed.

The memory is per process and bounded: past ``max_clients`` it starts over, which
at worst brings back the early lookups (one batched key per refused request), never
a request that skips a check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

__all__ = ["RefusedClients"]


class RefusedClients:
    """Typed client keys -> the monotonic time until which they are refused."""

    __slots__ = ("_clock", "_until", "max_clients")

    def __init__(
        self, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock
        self.max_clients = max_clients

    def refuse(self, keys: Collection[str], seconds: float) -> None:
        """Remember ``keys`` as refused for ``seconds`` (a longer refusal is kept)."""
        until = self._clock() + seconds
        known = self._until
        if len(known) + len(keys) > self.max_clients:
            known.clear()
        for key in keys:
            if known.get(key, 0.0) < until:
                known[key] = until

    def forget(self, key: str) -> None:
        """Forget ``key``'s refusal (``Guards.unban``)."""
        self._until.pop(key, None)

    def refused(self, key: str) -> bool:
        """Whether ``key`` was refused and its refusal has not run out."""
        until = self._until.get(key)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._until[key]
        return False

    def __bool__(self) -> bool:
        return bool(self._until)

    def __len__(self) -> int:
        return len(self._until)

    def clear(self) -> None:
        self._until.clear()
