"""Rates: ``"N/second|minute|hour|day"``, parsed here and nowhere else.

The decorators (``@rate_limited("50/hour")``), the guards' settings
(``GUARDS_DEFAULT_LIMITS``, a route's ``config=`` key, ``limit_blueprint``) and the
service's settings (``API_RATE_LIMIT`` and the like) all call these functions, so a
rate means the same everywhere and a bad one gets the same message, naming where it
came from.
"""

from __future__ import annotations

import math
import re
from typing import Final

from quart_api.guards.errors import ConfigurationError

__all__ = [
    "MAX_WINDOW_MS",
    "PERIOD_SECONDS",
    "countable",
    "parse_rate",
    "parse_rates",
    "rate_from_config",
]

#: Seconds in each period a rate string may name.
PERIOD_SECONDS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
#: The longest window of a limit: 100 years. The Redis scripts count a limit in whole
#: microseconds of the server's clock as Lua numbers (doubles), exact integers only
#: below 2**53 (about 285 years from 1970); far past that, Redis refuses the expiry
#: the script computes, and a limit whose every check fails is a limit that fails open.
MAX_WINDOW_MS: Final = 100 * 365 * 86_400_000

#: ASCII digits, letters and spaces only: ``\d`` would also take fullwidth or
#: Arabic-Indic digits, and case folding a long s (U+017F) for "s", which no reader
#: of a config file sees as the rate they are.
_RATE = re.compile(r"\s*([0-9]+)\s*/\s*(second|minute|hour|day)s?\s*", re.IGNORECASE | re.ASCII)
_RATE_SEPARATORS = re.compile(r"[,;]")


def countable(where: str, limit: int, window_ms: int) -> None:
    """Refuse a rate that no store can count exactly (``ValueError``).

    GCRA spaces requests ``window / limit`` apart, counted in whole microseconds;
    above one request per microsecond the spacing rounds to zero and nothing
    would ever be counted. A window longer than :data:`MAX_WINDOW_MS` is past what
    the stores count exactly.
    """
    if window_ms > MAX_WINDOW_MS:
        raise ValueError(
            f"{where}: a window of {window_ms} ms is longer than the longest a limit "
            f"may have, {MAX_WINDOW_MS} ms (100 years)."
        )
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
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
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


def parse_rates(text: str, name: str = "rates") -> list[tuple[int, int]]:
    """Every ``(limit, seconds)`` of ``"10/second, 1000/hour"`` (``,`` or ``;`` between).

    Raises:
        ConfigurationError: naming ``name`` and the value, when a part is not a rate
            (see :func:`parse_rate`) or there is none.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"{name}={text!r} names no rate: expected e.g. '300/minute'")
    rates = []
    for part in _RATE_SEPARATORS.split(text):
        try:
            rates.append(parse_rate(part, name))
        except ConfigurationError:
            raise ConfigurationError(
                f"{name}={text!r}: {part.strip()!r} is not a rate: expected 'N/second', "
                "'N/minute', 'N/hour' or 'N/day' with N >= 1, several separated by ','"
            ) from None
    return rates


def rate_from_config(key: str, value: object) -> tuple[int, int]:
    """``(limit, window_ms)`` from a config value ``"N/period"`` or ``(N, seconds)``."""
    if isinstance(value, str):
        limit, seconds = parse_rate(value, f"app.config[{key!r}]")
        return limit, seconds * 1000
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
            for v in value
        )
        and isinstance(value[0], int)
    ):
        parsed = value[0], round(value[1] * 1000)
        try:
            countable(f"app.config[{key!r}]", *parsed)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        return parsed
    raise ConfigurationError(
        f"app.config[{key!r}]={value!r} is not a rate: use 'N/second|minute|hour|day' "
        "or (limit, seconds)."
    )
