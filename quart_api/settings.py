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

from quart_api.guards import rates
from quart_api.guards.config import STORE_TIMEOUT
from quart_api.guards.errors import ConfigurationError, redact
from quart_api.guards.stores import check_memcached_servers, check_redis_url

__all__ = ["RateSpec", "Settings", "SettingsError", "parse_rate"]

log = logging.getLogger(__name__)

_DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")
#: The libpq spellings people paste from elsewhere, and the driver they mean here.
_DATABASE_SCHEME_ALIASES = {"postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg"}


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
    """Parse ``N/second|minute|hour|day`` with the guards' own parser; raise
    :class:`SettingsError` naming ``name``."""
    try:
        return RateSpec(*rates.parse_rate(value, name))
    except ConfigurationError as error:
        raise SettingsError(f"Setting {error}.") from None


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
    store_timeout: float = STORE_TIMEOUT
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
    #: concurrent password hashes per worker; None: the cores the process may use
    password_hash_slots: int | None = None
    password_hash_queue_timeout: float = 5.0
    signup_rate_limit: RateSpec = field(default_factory=lambda: RateSpec(10, 3600))
    #: the origin clients reach the service at, e.g. "https://api.example.com"
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
        database_url = reader.text("DATABASE_URL")
        values["database_url"] = None if database_url is None else _database_url(database_url)
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
        values["password_hash_slots"] = reader.integer("PASSWORD_HASH_SLOTS", minimum=1)
        values["password_hash_queue_timeout"] = reader.number(
            "PASSWORD_HASH_QUEUE_TIMEOUT", minimum=0.01
        )
        values["signup_rate_limit"] = reader.rate("SIGNUP_RATE_LIMIT")
        values["public_url"] = reader.text("PUBLIC_URL")
        given = {k: v for k, v in values.items() if v is not None}
        return cls(**given).validated()

    def validated(self) -> Settings:
        """Check cross-field rules; fill a development secret key when none was given."""
        _check_url("DATABASE_URL", self.database_url, _DATABASE_SCHEMES)
        try:
            # The guards' own checks: a URL they would refuse is refused here, at start-up.
            if self.redis_url:
                check_redis_url(self.redis_url)
            if self.memcached_servers:
                check_memcached_servers(self.memcached_servers)
        except ConfigurationError as error:
            raise SettingsError(f"Setting {error}.") from None
        for entry in self.metrics_allow:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise SettingsError(
                        f"Setting METRICS_ALLOW has {entry!r}, not an address or network."
                    ) from None
        if self.public_url is not None:
            _check_public_url(self.public_url)
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
            "SIGNUP_RATE_LIMIT": (self.signup_rate_limit.limit, self.signup_rate_limit.seconds),
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


def _database_url(url: str) -> str:
    """``url`` with a libpq scheme (``postgres://``) spelled as the asyncpg one."""
    scheme, sep, rest = url.partition("://")
    return (
        f"{_DATABASE_SCHEME_ALIASES[scheme.lower()]}://{rest}"
        if (sep and scheme.lower() in _DATABASE_SCHEME_ALIASES)
        else url
    )


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    """Scheme and host:port of a database URL; the message hides any password."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - ValueError when not a number in 0..65535
    except ValueError:
        raise SettingsError(f"Setting {name}={shown!r} has no valid host:port.") from None
    if parts.scheme not in schemes:
        raise SettingsError(
            f"Setting {name}={shown!r} has scheme {parts.scheme!r}; expected one of: "
            f"{', '.join(s + '://' for s in schemes)}."
        )
    if not parts.scheme.startswith("sqlite") and not parts.hostname:
        raise SettingsError(f"Setting {name}={shown!r} has no valid host:port.")


def _check_public_url(value: str) -> None:
    """``PUBLIC_URL`` is an origin: ``http(s)://host[:port]``, nothing else.

    Share links are built from it and cross-site requests are judged against it, so
    a path, query, fragment or credentials in it would be silently wrong.
    """
    problem = None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        parts, port, problem = None, None, str(error)
    if parts is not None and problem is None:
        if parts.scheme not in ("http", "https"):
            problem = "the scheme must be http or https"
        elif not parts.hostname or not _is_host(parts.hostname):
            problem = "it names no valid host"
        elif parts.username is not None or parts.password is not None:
            problem = "it must not carry credentials"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            problem = "it must have no path, query or fragment"
        elif port == 0:
            problem = "port 0 is not a port"
    if problem is not None:
        raise SettingsError(
            f"Setting PUBLIC_URL={value!r} is not an origin like 'https://api.example.com' "
            f"({problem})."
        )


_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def _is_host(hostname: str) -> bool:
    """A DNS name (ASCII, no trailing dot) or an IP address (urlsplit lower-cases it)."""
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return _HOSTNAME.match(hostname) is not None
    return True
