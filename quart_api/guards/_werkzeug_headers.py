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

from collections.abc import Iterable

from werkzeug.datastructures import Headers

__all__ = ["ServedHeaders", "append_checked"]

Pair = tuple[str, str]


def append_checked(headers: Headers, pairs: Iterable[Pair]) -> None:
    """Append ``pairs`` to ``headers`` as they are: no value may hold CR, LF or NUL."""
    headers._list.extend(pairs)


class ServedHeaders(Headers):
    """The headers of a response the guards assemble (a cache hit).

    ``items()`` returns the list itself, copied, rather than werkzeug's generator: Quart
    reads every response's headers through ``items()`` once, as it sends them, and a
    generator costs a resumption per header.
    """

    @classmethod
    def of_checked(cls, pairs: Iterable[Pair]) -> ServedHeaders:
        """Headers holding ``pairs``, which were checked when they were built."""
        headers = cls()
        headers._list = list(pairs)
        return headers

    def items(self, lower: bool = False) -> Iterable[Pair]:
        if lower:
            return super().items(lower=True)
        return self._list[:]
