"""The guards' settings: every default, and the one parser of each kind of setting text.

:data:`DEFAULTS` is the one table of defaults, by ``app.config`` key; the stores take
their defaults from the constants above it. Settings have one precedence:
constructor argument > ``app.config`` key > :data:`DEFAULTS`; :func:`read_settings`
checks the resolved values and turns them into a typed :class:`GuardsSettings`.

A server list (``"h1:p1,h2:p2"``) and a network list (``"10.0.0.0/8, 2001:db8::/32"``)
are parsed here and nowhere else, as rates are in ``rates``: the decorators, the
extension, the stores and the service's own settings all call these functions, so a
value means the same everywhere and a bad one gets the same message, naming where it
came from.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from quart_api.guards.errors import ConfigurationError
from quart_api.guards.rates import parse_rates

__all__ = [
    "BREAKER_COOLDOWN",
    "CONNECT_TIMEOUT",
    "DEFAULTS",
    "LATE_LOOP_GRACE",
    "MEMCACHED_POOL_SIZE",
    "ON_BREACH_TIMEOUT",
    "POOL_TIMEOUT",
    "REDIS_MAX_CONNECTIONS",
    "STORE_TIMEOUT",
    "GuardsSettings",
    "Network",
    "parse_networks",
    "parse_servers",
    "read_settings",
]

#: Seconds one store call may take before the guard fails open (``STORE_TIMEOUT``).
STORE_TIMEOUT: Final = 0.05
#: Seconds opening a store connection may take while the store seems healthy.
CONNECT_TIMEOUT: Final = 0.5
#: Seconds a call may wait for a free pooled connection: a burst queues, it is no outage.
POOL_TIMEOUT: Final = 5.0
#: Seconds a call may run past its timeout while its reply has arrived and the event
#: loop has not read it yet (a busy worker is not a slow store).
LATE_LOOP_GRACE: Final = 0.5
#: Connections per Redis server and worker.
REDIS_MAX_CONNECTIONS: Final = 64
#: Connections per memcached server and worker.
MEMCACHED_POOL_SIZE: Final = 8
#: Seconds a failing store is skipped before one probe is let through.
BREAKER_COOLDOWN: Final = 1.0
#: Seconds an async ``on_breach`` hook may take; then it is cancelled and the 429 goes
#: out (a slow alerting backend must not hold every refused request open).
ON_BREACH_TIMEOUT: Final = 1.0

#: Every setting of the guards and its default, by ``app.config`` key.
DEFAULTS: Final[dict[str, Any]] = {
    "REDIS_URL": None,  # None: counters in process memory
    "MEMCACHED_SERVERS": None,  # None: the response cache in process memory
    "GUARDS_ENABLED": True,
    "STORE_TIMEOUT": STORE_TIMEOUT,
    "TRUSTED_PROXY_COUNT": 0,
    "GUARDS_IPV6_PREFIX": 64,
    "GUARDS_KEY_PREFIX": None,  # None: derived from the app's name
    "GUARDS_LEGACY_HEADERS": False,
    "GUARDS_BREAKER_COOLDOWN": BREAKER_COOLDOWN,
    "GUARDS_PROTECT_UNROUTED": None,  # (failures, seconds) to ban scanners of unknown paths
    "GUARDS_DEFAULT_LIMITS": None,  # "300/minute": every route without its own limit
    "GUARDS_SAFELIST": None,  # networks that skip limits and bans
    "GUARDS_BLOCKLIST": None,  # networks refused with 403 on every route
}

_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?$")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- servers and networks --------------------------------------------------------------


def parse_servers(
    servers: str | Iterable[tuple[str, int]], name: str = "MEMCACHED_SERVERS"
) -> list[tuple[str, int]]:
    """``"h1:p1,h2:p2"`` (or pairs) -> ``[(host, port), ...]``, else ``ConfigurationError``.

    A host is a DNS name or an IP address (IPv6 in brackets: ``[::1]:11211``). A URL
    such as ``memcached://h:11211`` is refused here, at start-up, rather than failing
    to resolve at the first request. ``name`` is the setting the error names.
    """
    if not isinstance(servers, str):
        pairs = [(str(host), int(port)) for host, port in servers]
    else:
        pairs = []
        for part in servers.split(","):
            part = part.strip()
            if "://" in part or "/" in part or "@" in part:
                raise ConfigurationError(
                    f"{name} {servers!r}: {part!r} is not host:port (write host:port "
                    "without a scheme, path or user, e.g. '127.0.0.1:11211')"
                )
            host, _, port = part.rpartition(":")
            bare = host.strip("[]")
            if not host or not port.isdigit() or not _is_host(bare):
                raise ConfigurationError(f"{name} {servers!r}: {part!r} is not host:port")
            pairs.append((bare, int(port)))
    if not pairs or any(not host or not 0 < port < 65536 for host, port in pairs):
        raise ConfigurationError(f"{name} {servers!r}: need host:port[,host:port...]")
    return pairs


def _is_host(host: str) -> bool:
    """A DNS name (underscores allowed, as container names have them) or an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and _HOSTNAME.match(host) is not None
    return True


def parse_networks(value: str | Iterable[str] | None, name: str) -> tuple[Network, ...]:
    """Networks from ``"10.0.0.0/8, 192.0.2.7, 2001:db8::/32"`` (or a list of such strings).

    A bare address is a network of one; host bits are ignored (``10.1.2.3/8`` is
    ``10.0.0.0/8``). IPv4-mapped IPv6 networks are refused: client addresses are
    unwrapped to IPv4 before they are compared, so such a network would never match.
    """
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for part in parts:
        if not isinstance(part, str):
            raise ConfigurationError(f"{name}={value!r}: {part!r} is not a network")
        text = part.strip()
        if not text:
            continue
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"{name}={value!r}: {text!r} is not an IP address or network "
                "(e.g. '10.0.0.0/8' or '2001:db8::/32')"
            ) from None
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
            raise ConfigurationError(
                f"{name}={value!r}: write {text!r} as an IPv4 network; clients are "
                "compared by their IPv4 address"
            )
        networks.append(network)
    return tuple(networks)


# -- the resolved settings of one app ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardsSettings:
    """One app's guards settings, checked and typed (see :data:`DEFAULTS`)."""

    redis_url: str | None
    memcached_servers: str | None
    enabled: bool
    store_timeout: float
    trusted_proxy_count: int
    ipv6_prefix: int
    key_prefix: str | None
    legacy_headers: bool
    breaker_cooldown: float
    protect_unrouted: tuple[int, int] | None
    default_limits: tuple[tuple[int, int], ...]
    safelist: tuple[Network, ...]
    blocklist: tuple[Network, ...]


def read_settings(values: Mapping[str, Any]) -> GuardsSettings:
    """Check every setting of ``values`` (keyed as :data:`DEFAULTS`); raise naming the bad one."""
    default_limits = values["GUARDS_DEFAULT_LIMITS"]
    return GuardsSettings(
        redis_url=_optional_text("REDIS_URL", values["REDIS_URL"]),
        memcached_servers=_optional_text("MEMCACHED_SERVERS", values["MEMCACHED_SERVERS"]),
        enabled=bool(values["GUARDS_ENABLED"]),
        store_timeout=_positive_float("STORE_TIMEOUT", values["STORE_TIMEOUT"]),
        trusted_proxy_count=_non_negative_int("TRUSTED_PROXY_COUNT", values["TRUSTED_PROXY_COUNT"]),
        ipv6_prefix=_prefix_length(values["GUARDS_IPV6_PREFIX"]),
        key_prefix=_key_prefix(values["GUARDS_KEY_PREFIX"]),
        legacy_headers=bool(values["GUARDS_LEGACY_HEADERS"]),
        breaker_cooldown=_positive_float(
            "GUARDS_BREAKER_COOLDOWN", values["GUARDS_BREAKER_COOLDOWN"]
        ),
        protect_unrouted=_unrouted(values["GUARDS_PROTECT_UNROUTED"]),
        default_limits=()
        if default_limits is None
        else tuple(parse_rates(default_limits, "GUARDS_DEFAULT_LIMITS")),
        safelist=parse_networks(values["GUARDS_SAFELIST"], "GUARDS_SAFELIST"),
        blocklist=parse_networks(values["GUARDS_BLOCKLIST"], "GUARDS_BLOCKLIST"),
    )


def _optional_text(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"Guards setting {key}={value!r} must be a string.")
    return value.strip() or None


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"Guards setting {key}={value!r} must be a positive number.")
    return float(value)


def _non_negative_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"Guards setting {key}={value!r} must be an int >= 0.")
    return value


def _prefix_length(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 128:
        raise ConfigurationError(f"Guards setting GUARDS_IPV6_PREFIX={value!r} must be 1..128.")
    return value


def _key_prefix(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _KEY_PREFIX.fullmatch(value):
        raise ConfigurationError(
            f"Guards setting GUARDS_KEY_PREFIX={value!r} must be 1 to 64 characters of "
            "letters, digits, '_', '.' and '-'."
        )
    return value


def _unrouted(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigurationError(
            f"Guards setting GUARDS_PROTECT_UNROUTED={value!r} must be (failures, seconds)."
        )
    return (value[0], value[1])
