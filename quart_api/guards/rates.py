"""The rate string, ``"N/second|minute|hour|day"``: parsed here and nowhere else.

The guards' ``app.config`` limits and the service's settings (``API_RATE_LIMIT``
and the like) both call :func:`parse_rate`, so a rate means the same everywhere
and a bad one gets the same message naming where it came from.
"""

from __future__ import annotations

import re

from quart_api.guards.errors import ConfigurationError

__all__ = ["PERIOD_SECONDS", "countable", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)

#: Seconds in each period a rate string may name.
PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def countable(where: str, limit: int, window_ms: int) -> None:
    """Refuse a rate finer than one request per microsecond (``ValueError``).

    GCRA spaces requests ``window / limit`` apart, counted in whole microseconds;
    above one request per microsecond the spacing rounds to zero and nothing
    would ever be counted.
    """
    if window_ms * 1000 < limit:
        raise ValueError(
            f"{where}: {limit} requests per {window_ms} ms is more than one per "
            "microsecond, which cannot be counted; use a longer window or a lower limit."
        )


def parse_rate(text: str, name: str = "rate") -> tuple[int, int]:
    """``(limit, seconds)`` from ``"N/second|minute|hour|day"`` (plural and case allowed).

    Args:
        text: the rate string, e.g. ``"300/minute"``; ``N`` is at least 1.
        name: where the value came from (a setting's name), used in the error.

    Raises:
        ConfigurationError: naming ``name`` and the value, when it is not such a
            rate or is finer than one request per microsecond.
    """
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ConfigurationError(
            f"{name}={text!r} is not a rate: expected 'N/second', 'N/minute', 'N/hour' "
            "or 'N/day' with N >= 1"
        )
    limit, seconds = int(match.group(1)), PERIOD_SECONDS[match.group(2).lower()]
    try:
        countable(f"{name}={text!r}", limit, seconds * 1000)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    return limit, seconds
