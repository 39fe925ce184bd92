"""The one place the guards reach into werkzeug's ``Headers``: its list of pairs.

Every header the guards add on a request's way out (``RateLimit``, ``ETag``,
``X-Cache``, a cached entry's own headers) is built by the guards from numbers and
checked names, or was checked when its entry was decoded. werkzeug checks each value
again for line breaks as it is set, one Python call per header, on every response of a
guarded route. Here such pairs go straight into the list werkzeug keeps them in
(``Headers._list``, there since werkzeug 0.x and bounded in ``pyproject.toml``); the
test ``test_werkzeug_headers`` fails if a werkzeug release moves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from werkzeug.datastructures import Headers

__all__ = ["ServedHeaders", "append_checked"]

Pair = tuple[str, str]


def append_checked(headers: Headers, pairs: Iterable[Pair]) -> None:
    """Append ``pairs`` to ``headers`` as they are: each was built or checked as a header
    h11 sends (a token name; a value with no control character but spaces and tabs
    between visible ones)."""
    headers._list.extend(pairs)


class ServedHeaders(Headers):
    """The headers of a response the guards assemble (a cache hit).

    ``items()`` iterates over a copy of the pairs, in C, rather than werkzeug's
    generator: Quart reads every response's headers through ``items()`` once, as it
    sends them, and a generator costs a Python resumption per header. (A copy, so a
    hook that changes the headers while it walks them sees them as they were, where
    werkzeug's generator would skip or repeat pairs.) They compare equal to any
    ``Headers`` holding the same pairs, as werkzeug's compare among themselves.
    """

    @classmethod
    def of_checked(cls, pairs: Iterable[Pair]) -> ServedHeaders:
        """Headers holding ``pairs``, which were checked when they were built."""
        headers = cls()
        headers._list = list(pairs)
        return headers

    def items(self, lower: bool = False) -> Iterator[Pair]:
        if lower:
            return iter(super().items(lower=True))
        return iter(self._list[:])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return _lowered(self._list) == _lowered(other._list)

    __hash__ = None


def _lowered(pairs: Iterable[Pair]) -> set[Pair]:
    return {(name.lower(), value) for name, value in pairs}
