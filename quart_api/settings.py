"""Typed settings, read from the environment in one place.

Every other module receives a :class:`Settings` (or values taken from it);
nothing else reads ``os.environ``. A bad value fails at start-up with a
:class:`SettingsError` that names the variable and the value, because a typo
found by the first request in production is found too late.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["RateSpec", "Settings", "SettingsError", "parse_rate"]

log = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")
_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster")


class SettingsError(ValueError):
    """A setting has a value the service cannot start with."""


@dataclass(frozen=True, slots=True)
class RateSpec:
    """``limit`` requests per ``seconds`` (parsed from ``"300/minute"``)."""

    limit: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.seconds}s"


def parse_rate(value: str, name: str = "rate") -> RateSpec:
    """Parse ``N/second|minute|hour|day``; raise :class:`SettingsError` naming ``name``."""
    match = _RATE.match(value)
    if not match or int(match.group(1)) < 1:
        raise SettingsError(
            f"Setting {name}={value!r} is not a rate: expected 'N/second', 'N/minute', "
            "'N/hour' or 'N/day' with N >= 1."
        )
    spec = RateSpec(int(match.group(1)), _PERIOD_SECONDS[match.group(2).lower()])
    if spec.limit > spec.seconds * 1_000_000:
        raise SettingsError(
            f"Setting {name}={value!r} is more than one request per microsecond, "
            "which the rate limiter cannot count; use a lower rate."
        )
    return spec


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be configured with (see README, "Settings")."""

    app_env: Literal["development", "production"] = "development"
    secret_key: str = ""
    database_url: str = "sqlite+aiosqlite:///quart_api.db"
    database_timeout: float = 5.0
    database_pool_size: int = 10
    redis_url: str | None = None
    memcached_servers: str | None = None
    store_timeout: float = 0.05
    trusted_proxy_count: int = 0
    api_rate_limit: RateSpec = field(default_factory=lambda: RateSpec(300, 60))
    login_rate_limit: RateSpec = field(default_factory=lambda: RateSpec(10, 60))
    protect_limit: RateSpec = field(default_factory=lambda: RateSpec(10, 3600))
    guards_enabled: bool = True
    max_content_length: int = 64 * 1024
    log_level: str = "INFO"
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    prometheus_multiproc_dir: str | None = None
    auth_cache_seconds: float = 5.0
    gc_freeze: bool = True
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    argon2_parallelism: int = 4
    #: The service's public origin (``https://api.example.com``): links and OAuth URLs
    #: are built from it, never from the ``Host`` header; unset: from the request.
    public_url: str | None = None
    # Set when this process generated its own key (development only).
    secret_key_generated: bool = False

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def debug(self) -> bool:
        return self.app_env == "development"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; the only reader of the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        reader = _Reader(env)
        values["app_env"] = reader.choice("APP_ENV", ("development", "production"))
        values["secret_key"] = reader.text("SECRET_KEY")
        values["database_url"] = reader.text("DATABASE_URL")
        values["database_timeout"] = reader.number("DATABASE_TIMEOUT", minimum=0.01)
        values["database_pool_size"] = reader.integer("DATABASE_POOL_SIZE", minimum=1)
        values["redis_url"] = reader.text("REDIS_URL")
        values["memcached_servers"] = reader.text("MEMCACHED_SERVERS")
        values["store_timeout"] = reader.number("STORE_TIMEOUT", minimum=0.001)
        values["trusted_proxy_count"] = reader.integer("TRUSTED_PROXY_COUNT", minimum=0)
        values["api_rate_limit"] = reader.rate("API_RATE_LIMIT")
        values["login_rate_limit"] = reader.rate("LOGIN_RATE_LIMIT")
        values["protect_limit"] = reader.rate("PROTECT_LIMIT")
        values["guards_enabled"] = reader.boolean("GUARDS_ENABLED")
        values["max_content_length"] = reader.integer("MAX_CONTENT_LENGTH", minimum=1024)
        values["log_level"] = reader.text("LOG_LEVEL")
        values["metrics_allow"] = reader.csv("METRICS_ALLOW")
        values["prometheus_multiproc_dir"] = reader.text("PROMETHEUS_MULTIPROC_DIR")
        values["auth_cache_seconds"] = reader.number("AUTH_CACHE_SECONDS", minimum=0.0)
        values["gc_freeze"] = reader.boolean("GC_FREEZE")
        values["argon2_time_cost"] = reader.integer("ARGON2_TIME_COST", minimum=1)
        values["argon2_memory_cost"] = reader.integer("ARGON2_MEMORY_COST", minimum=8)
        values["argon2_parallelism"] = reader.integer("ARGON2_PARALLELISM", minimum=1)
        values["public_url"] = reader.text("PUBLIC_URL")
        given = {k: v for k, v in values.items() if v is not None}
        return cls(**given).validated()

    def validated(self) -> Settings:
        """Check cross-field rules; fill a development secret key when none was given."""
        _check_url("DATABASE_URL", self.database_url, _DATABASE_SCHEMES)
        if self.redis_url:
            _check_url("REDIS_URL", self.redis_url, _REDIS_SCHEMES)
        if self.memcached_servers:
            _check_servers("MEMCACHED_SERVERS", self.memcached_servers)
        for entry in self.metrics_allow:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise SettingsError(
                        f"Setting METRICS_ALLOW has {entry!r}, not an address or network."
                    ) from None
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            raise SettingsError(f"Setting LOG_LEVEL={self.log_level!r} is not a logging level.")
        if self.secret_key:
            if self.production and len(self.secret_key) < 32:
                raise SettingsError(
                    "Setting SECRET_KEY is too short for APP_ENV=production: use at least "
                    "32 random characters (python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))')."
                )
            return self
        if self.production:
            raise SettingsError(
                "Setting SECRET_KEY is required when APP_ENV=production: session cookies "
                "are signed with it and must survive restarts and match across workers."
            )
        return replace(self, secret_key=secrets.token_urlsafe(48), secret_key_generated=True)

    def guards_config(self) -> dict[str, Any]:
        """The ``app.config`` keys the guards read, and the limits routes name by key.

        The service, and every app that embeds the guards the way it does (the
        resilience tests', the benchmark's), configure them from here, so a setting
        means the same in each of them.
        """
        return {
            "REDIS_URL": self.redis_url,
            "MEMCACHED_SERVERS": self.memcached_servers,
            "STORE_TIMEOUT": self.store_timeout,
            "TRUSTED_PROXY_COUNT": self.trusted_proxy_count,
            "GUARDS_ENABLED": self.guards_enabled,
            "API_RATE_LIMIT": (self.api_rate_limit.limit, self.api_rate_limit.seconds),
            "LOGIN_RATE_LIMIT": (self.login_rate_limit.limit, self.login_rate_limit.seconds),
            "PROTECT_LIMIT": (self.protect_limit.limit, self.protect_limit.seconds),
        }

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (tests and embedding apps)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"Unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **changes).validated()


class _Reader:
    """Parses one variable at a time; ``None`` means "not set, keep the default"."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str) -> str | None:
        return self._raw(name)

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        value = self._raw(name)
        if value is not None and value not in options:
            raise SettingsError(f"Setting {name}={value!r} is not one of: {', '.join(options)}.")
        return value

    def integer(self, name: str, *, minimum: int) -> int | None:
        value = self._raw(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"Setting {name}={value!r} is not an integer.") from None
        if number < minimum:
            raise SettingsError(f"Setting {name}={value!r} must be at least {minimum}.")
        return number

    def number(self, name: str, *, minimum: float) -> float | None:
        value = self._raw(name)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"Setting {name}={value!r} is not a number (seconds).") from None
        if not number >= minimum:  # also rejects NaN
            raise SettingsError(f"Setting {name}={value!r} must be at least {minimum}.")
        return number

    def boolean(self, name: str) -> bool | None:
        value = self._raw(name)
        if value is None:
            return None
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"Setting {name}={value!r} is not a boolean (true/false).")

    def rate(self, name: str) -> RateSpec | None:
        value = self._raw(name)
        return None if value is None else parse_rate(value, name)

    def csv(self, name: str) -> tuple[str, ...] | None:
        value = self._raw(name)
        if value is None:
            return None
        return tuple(part.strip() for part in value.split(",") if part.strip())


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SettingsError(f"Setting {name}={url!r} is not a URL: {exc}.") from None
    if parts.scheme not in schemes:
        raise SettingsError(
            f"Setting {name}={url!r} has scheme {parts.scheme!r}; expected one of: "
            f"{', '.join(s + '://' for s in schemes)}."
        )
    if parts.scheme.startswith("sqlite"):
        return
    if parts.scheme == "unix":
        if not parts.path:
            raise SettingsError(f"Setting {name}={url!r} names no socket path.")
        return
    try:
        for netloc in parts.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
            if port:
                int(port)
            if not (host or netloc):
                raise ValueError("no host")
    except ValueError:
        raise SettingsError(f"Setting {name}={url!r} has no valid host[:port].") from None


def _check_servers(name: str, value: str) -> None:
    for server in value.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"Setting {name}={value!r}: {server.strip()!r} is not host:port.")
