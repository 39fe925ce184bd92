"""Argument checks shared by the guard decorators and the start-up config reader.

Every decorator argument is checked when the decorator runs, at import time, so a
typo fails when the module loads rather than on the first request in production;
each error names the decorator and the value. ``rate_from_config`` reads a rate from
``app.config`` when the guards are installed, through the one rate parser in ``rates``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from datetime import timedelta

from quart_api.guards._specs import IdentityFn
from quart_api.guards.errors import ConfigurationError
from quart_api.guards.rates import countable, parse_rate

__all__ = [
    "callable_or_none",
    "config_key",
    "countable",
    "methods_of",
    "number",
    "positive_int",
    "rate_from_config",
    "scope_of",
    "window_ms_of",
]

_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def window_ms_of(
    decorator: str, minutes: float | None, seconds: float | None, per: timedelta | None
) -> int:
    given = [v for v in (minutes, seconds, per) if v is not None]
    if len(given) > 1:
        raise TypeError(f"@{decorator}: give one of minutes=, seconds= or per=, not several.")
    if per is not None:
        if not isinstance(per, timedelta):
            raise TypeError(f"@{decorator}: per= must be a datetime.timedelta, not {per!r}.")
        total = per.total_seconds()
    elif seconds is not None:
        total = number(decorator, "seconds", seconds)
    else:
        total = 60.0 * number(decorator, "minutes", minutes)
    ms = round(total * 1000)
    if ms < 1:
        raise ValueError(f"@{decorator}: the window must be positive, got {total!r} seconds.")
    return ms


def number(decorator: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"@{decorator}: {name}= must be a number, not {value!r}.")
    return float(value)


def positive_int(decorator: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"@{decorator}: {name}= must be an int, not {value!r}.")
    if value < 1:
        raise ValueError(f"@{decorator}: {name}= must be at least 1, got {value!r}.")
    return value


def callable_or_none(decorator: str, name: str, value: object) -> IdentityFn | None:
    if value is None:
        return None
    if not callable(value):
        raise TypeError(f"@{decorator}: {name}= must be a callable, not {value!r}.")
    if inspect.signature(value).parameters and any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in inspect.signature(value).parameters.values()
    ):
        raise TypeError(f"@{decorator}: {name}= is called with no arguments; {value!r} needs some.")
    return value


def methods_of(decorator: str, methods: Iterable[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, str):
        raise TypeError(
            f"@{decorator}: methods= takes a list of methods, not the string {methods!r}."
        )
    normalized = frozenset(m.upper() for m in methods)
    unknown = normalized - _HTTP_METHODS
    if unknown:
        raise ValueError(f"@{decorator}: unknown HTTP methods {sorted(unknown)}.")
    if not normalized:
        raise ValueError(f"@{decorator}: methods= is empty; leave it out to limit every method.")
    return normalized


def config_key(decorator: str, key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise TypeError(f"@{decorator}: config= names an app.config key, got {key!r}.")
    return key


def rate_from_config(key: str, value: object) -> tuple[int, int]:
    """``(limit, window_ms)`` from a config value ``"N/period"`` or ``(N, seconds)``."""
    if isinstance(value, str):
        limit, seconds = parse_rate(value, f"app.config[{key!r}]")
        return limit, seconds * 1000
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
        and isinstance(value[0], int)
    ):
        parsed = value[0], round(value[1] * 1000)
        countable(f"app.config[{key!r}]", *parsed)
        return parsed
    raise ConfigurationError(
        f"app.config[{key!r}]={value!r} is not a rate: use 'N/second|minute|hour|day' "
        "or (limit, seconds)."
    )


def scope_of(decorator: str, scope: object) -> str | None:
    if scope is None:
        return None
    if not isinstance(scope, str) or not scope or any(c in scope for c in " {}\r\n\t"):
        raise ValueError(
            f"@{decorator}: scope= must be a non-empty name without spaces or braces, "
            f"got {scope!r}."
        )
    return scope
