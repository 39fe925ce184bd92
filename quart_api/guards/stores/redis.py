"""Redis counter store: every check of a request in one Lua script, one round trip.

Capability: atomic check-and-charge of several GCRA limits plus ban reads, attempt
reservations and failure-tally reservations (``check.lua``, all-or-nothing), failure
counting with escalating bans (``fail.lua``) and giving reservations back
(``release.lua``), shared by every worker and host that uses the same Redis.
URLs: ``redis://``, ``rediss://``, ``unix://``, ``valkey://`` and ``valkeys://`` (the
same protocol), ``redis+cluster://h1:p1,h2:p2`` (Redis Cluster); Sentinel is
``redis_sentinel.py``.

Speed: scripts are called by SHA (``EVALSHA``) and reloaded by themselves after
``NOSCRIPT`` (a restart or failover). With ``batch=True`` the calls made in one
event-loop tick by concurrent requests go out as ONE pipeline, so under load a
request costs well under one round trip (``round_trips / calls`` measures it).
``_redis_link.py`` does the talking and holds the bounds (``timeout``,
``connect_timeout``, ``pool_timeout``).

Cluster: the keys of one script call must share a hash slot, so a request's keys
are grouped by slot and each group is one ``check.lua`` call (same pipeline, so
still one round trip per node). Each call is all-or-nothing in its slot; when one
refuses while another charged, the charged ones are refunded by ``refund.lua`` and
``release.lua`` (one more round trip, on refusals only), so a refused request costs
none of its limits and reserves no attempt. Keys sharing a ``{hash tag}`` share a
slot (a per-client tag makes it one call). The keys of one ban (``BanCheck``,
``Failure``) must share a slot (``ValueError`` otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from ..config import (
    CONNECT_TIMEOUT,
    LATE_LOOP_GRACE,
    POOL_TIMEOUT,
    REDIS_MAX_CONNECTIONS,
    STORE_TIMEOUT,
    parse_servers,
)
from ..errors import ConfigurationError, redact
from . import _redis_adapter as redis_py
from ._redis_link import CHECK, FAIL, REFUND, RELEASE, Command, Item, RedisLink
from ._redis_servers import ClusterNodes, OneServer, Servers
from .base import (
    BanCheck,
    BanState,
    CheckResult,
    CounterStore,
    Failure,
    Limit,
    LimitState,
    Release,
    Tally,
    gcra_costs,
    make_tuple,
    validate_ban_check,
    validate_failure,
    validate_tally,
)

__all__ = ["RedisCounterStore", "split_url"]

_UNSET = LimitState(False, 0, 0, 0)
_NO_BAN = BanState(False, 0, 0)
#: schemes whose URL redis-py reads itself (``valkey`` spelt as ``redis``)
_URL_SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "unix",
    "valkey": "redis",
    "valkeys": "rediss",
}
_CLUSTER = "redis+cluster"


_AUTHORITY_END = re.compile(r"[/?#]")
_QUERY_START = re.compile(r"[?#]")


def split_url(url: str) -> tuple[str, list[tuple[str, int]], list[str], dict[str, str]]:
    """``scheme://[user:password@]h1:p1[,h2:p2]/a/b`` -> scheme, hosts, path parts, auth.

    The user and password are percent-decoded (``p%40ss`` is ``p@ss``).

    The host list is read by :func:`~quart_api.guards.config.parse_servers`; the query
    string is ignored. Raises ``ConfigurationError`` naming ``REDIS_URL`` (password
    hidden).
    """
    shown = redact(url)
    scheme, _, rest = url.partition("://")
    netloc = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    after = rest[len(netloc) :]
    if "@" in after:
        # A '/', '?' or '#' in the user or password ended the host list early: the
        # text before it is part of the password and must not show.
        raise ConfigurationError(
            f"REDIS_URL {shown!r}: a '/', '?' or '#' in the user or password ends the "
            "host list; percent-encode them ('%2F', '%3F', '%23')"
        )
    path = _QUERY_START.split(after, maxsplit=1)[0]
    userinfo, _, hosts = netloc.rpartition("@")
    try:
        servers = parse_servers(hosts, "REDIS_URL")
    except ConfigurationError:
        raise ConfigurationError(
            f"REDIS_URL {shown!r}: {hosts!r} is not host:port[,host:port...]"
        ) from None
    auth: dict[str, str] = {}
    if userinfo:
        # Percent-decoded, as redis-py decodes the userinfo of a redis:// URL: one
        # password is written the same way in every scheme.
        user, sep, password = (unquote(part) for part in userinfo.partition(":"))
        auth = {"username": user, "password": password} if sep else {"password": user}
        auth = {k: v for k, v in auth.items() if v}
    return scheme.lower(), servers, [p for p in path.split("/") if p], auth


def _check_single_server_url(url: str, scheme: str) -> None:
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in 0..65535
    except ValueError:
        raise ConfigurationError(f"REDIS_URL {shown!r} has no valid host:port") from None
    if scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"REDIS_URL {shown!r} names no socket path")
        return
    if not parts.hostname or port == 0:
        raise ConfigurationError(f"REDIS_URL {shown!r} has no valid host:port")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ConfigurationError(
            f"REDIS_URL {shown!r}: the path is a database number, not {database!r}"
        )


def _decode_check(raw: list[int], n: int, m: int, t: int = 0) -> CheckResult:
    end = 1 + 4 * n
    fours = iter(raw[1:end])
    states = []  # a loop, not a comprehension: no frame of its own
    for allowed, left, reset, retry in zip(fours, fours, fours, fours, strict=True):
        states.append(make_tuple(LimitState, (allowed == 1, left, reset, retry)))
    limits = tuple(states)
    if not m and not t:
        return make_tuple(CheckResult, (raw[0] == 1, limits, (), ()))
    bans = tuple(
        [
            BanState(raw[i] == 1, raw[i + 1], raw[i + 2], raw[i + 3] == 1)
            for i in range(end, end + 4 * m, 4)
        ]
    )
    if not t:
        return CheckResult(raw[0] == 1, limits, bans)
    start = end + 4 * m
    tallies = tuple(
        [BanState(raw[i] == 1, raw[i + 1], raw[i + 2]) for i in range(start, start + 3 * t, 3)]
    )
    return CheckResult(raw[0] == 1, limits, bans, tallies)


class RedisCounterStore(CounterStore):
    """Counters in Redis or a Redis Cluster (see the module docstring).

    Args:
        url: ``redis://``, ``rediss://``, ``unix://``, ``valkey://``, ``valkeys://`` or
            ``redis+cluster://[user:password@]h1:p1,h2:p2``.
        timeout: bound in seconds on the commands of one call (``STORE_TIMEOUT``).
        max_connections: connections per server; more concurrent calls queue.
        batch: pipeline the calls of one event-loop tick into one round trip.
        key_prefix: prepended to every key (and to ``delete_matching`` patterns).
        connect_timeout: bound on opening a connection (cluster: on discovery).
        pool_timeout: bound on waiting for a free connection.
        late_grace: how long past ``timeout`` a call may wait for a reply that has
            arrived but that a busy event loop has not read yet.
    """

    kind = "redis"
    schemes: ClassVar[tuple[str, ...]] = (*_URL_SCHEMES, _CLUSTER)

    def __init__(
        self,
        url: str,
        *,
        timeout: float = STORE_TIMEOUT,
        max_connections: int = REDIS_MAX_CONNECTIONS,
        batch: bool = True,
        key_prefix: str = "",
        connect_timeout: float = CONNECT_TIMEOUT,
        pool_timeout: float = POOL_TIMEOUT,
        late_grace: float = LATE_LOOP_GRACE,
    ) -> None:
        self.check_url(url)
        self._prefix = key_prefix
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        servers = self._servers(url.strip())
        self._cluster = isinstance(servers, ClusterNodes)
        self._link = RedisLink(
            servers,
            timeout=timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            max_connections=max_connections,
            batch=batch,
            late_grace=late_grace,
        )
        #: script calls asked for (check / record_failure); see also ``round_trips``.
        self.calls = 0
        self._argv: dict[tuple[int, int, int, bool], tuple[bytes, ...]] = {}

    @classmethod
    def check_url(cls, url: str) -> None:
        """Raise ``ConfigurationError`` naming ``REDIS_URL`` (password hidden) unless
        ``url`` is one this store takes: a host and a port in range (a socket path for
        ``unix://``), a numeric database; for a cluster, ``host:port`` nodes."""
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme == _CLUSTER:
            split_url(url)
        elif scheme in _URL_SCHEMES:
            _check_single_server_url(url, scheme)
        else:
            raise ConfigurationError(
                f"REDIS_URL {redact(url)!r}: {cls.__name__} takes "
                f"{', '.join(s + '://' for s in cls.schemes)}"
            )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = STORE_TIMEOUT,
        key_prefix: str = "",
        max_connections: int = REDIS_MAX_CONNECTIONS,
        batch: bool = True,
    ) -> RedisCounterStore:
        return cls(
            url,
            timeout=timeout,
            key_prefix=key_prefix,
            max_connections=max_connections,
            batch=batch,
        )

    def _servers(self, url: str) -> Servers:
        """Where the commands go for ``url`` (a subclass names other servers)."""
        scheme = url.partition("://")[0].lower()
        bounds = {"pool_timeout": self._pool_timeout, "connect_timeout": self._connect_timeout}
        connections = self._max_connections
        if scheme == _CLUSTER:
            _, nodes, _, auth = split_url(url)

            def node_pool(host: str, port: int) -> redis_py.Pool:
                return redis_py.node_pool(host, port, auth, max_connections=connections, **bounds)

            return ClusterNodes(
                nodes, auth, make_pool=node_pool, connect_timeout=self._connect_timeout
            )
        spelt = _URL_SCHEMES[scheme] + url[len(scheme) :]
        return OneServer(lambda: redis_py.url_pool(spelt, max_connections=connections, **bounds))

    @property
    def round_trips(self) -> int:
        """Network round trips made so far (pipelines sent); ``calls`` over this is the gain."""
        return self._link.round_trips

    @round_trips.setter
    def round_trips(self, value: int) -> None:
        self._link.round_trips = value

    # --- the counter interface -------------------------------------------------

    async def check(
        self, limits: Sequence[Limit], bans: Sequence[BanCheck], tallies: Sequence[Tally] = ()
    ) -> CheckResult:
        """Check and charge ``limits``, read ``bans``, reserve attempts: one ``check.lua``."""
        if not limits and not bans and not tallies:
            return CheckResult(True, (), ())
        for tally in tallies:
            validate_tally(tally)
        for ban in bans:
            validate_ban_check(ban)
        self.calls += 1
        if not self._cluster:
            raw = await self._link.call(self._check_command(limits, bans, tallies))
            return _decode_check(raw, len(limits), len(bans), len(tallies))
        if not bans and not tallies:
            return await self._check_limits_by_slot(limits)
        return await self._check_by_slot(limits, bans, tallies)

    async def release(self, releases: Sequence[Release]) -> None:
        """Give back reserved attempts: one ``release.lua`` call per hash slot."""
        if not releases:
            return
        self.calls += 1
        await self._link.many(self._release_commands(releases))

    def _release_commands(self, releases: Sequence[Release]) -> list[Item]:
        p = self._prefix
        groups: dict[int, list[Release]] = {}
        for release in releases:
            groups.setdefault(self._slot(p + release.key), []).append(release)
        return [
            (
                (
                    self._link_evalsha,
                    RELEASE.sha,
                    len(group),
                    *(p + r.key for r in group),
                    *(v for r in group for v in (r.member or "", r.attempts)),
                ),
                slot,
            )
            for slot, group in groups.items()
        ]

    async def record_failure(self, failure: Failure) -> BanState:
        """Count one failure, ban at the limit: one ``fail.lua`` call."""
        validate_failure(failure)
        p = self._prefix
        keys = [p + failure.fail_key, p + failure.ban_key]
        if failure.pending_key is not None:
            keys.append(p + failure.pending_key)
        if failure.offence_key is not None:
            keys.append(p + failure.offence_key)
        slot = self._same_slot(keys)
        self.calls += 1
        raw = await self._link.call(
            (
                self._link_evalsha,
                FAIL.sha,
                len(keys),
                *keys,
                failure.limit,
                failure.window_ms,
                failure.max_ban_ms,
                int(failure.pending_key is not None),
            ),
            slot,
        )
        return BanState(raw[0] == 1, raw[1], raw[2])

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._link.commands(self._unlinks(keys))

    async def delete_matching(self, pattern: str) -> int:
        """SCAN (every primary of a cluster) and UNLINK the keys matching ``pattern``."""
        match = self._prefix + pattern
        deleted = 0
        for pool in await self._primaries():
            cursor: Any = b"0"
            while True:
                scan = ("SCAN", cursor, "MATCH", match, "COUNT", 1000)
                cursor, found = await self._link.on_pool(pool, scan)
                if found:
                    deleted += sum(await self._link.commands(self._unlinks(found, prefixed=True)))
                if int(cursor) == 0:
                    break
        return deleted

    async def ping(self) -> None:
        for pool in await self._primaries():
            await self._link.on_pool(pool, ("PING",))

    async def _primaries(self) -> list[redis_py.Pool]:
        return await self._link.primaries()

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        """Drop every connection; the next call reconnects."""
        await self._link.close()

    # --- building script calls ---------------------------------------------------

    #: standalone packs bytes as they are (hiredis); the name is the same either way
    _link_evalsha = b"EVALSHA"

    def _limit_argv(self, lim: Limit) -> tuple[bytes, ...]:
        """The script's arguments for ``lim``'s terms, formatted once per distinct terms."""
        spec = lim[1:]  # (limit, window_ms, cost, dry_run)
        argv = self._argv.get(spec)
        if argv is None:
            window_us, interval_us, cost_us = gcra_costs(lim.limit, lim.window_ms, lim.cost)
            argv = tuple(
                str(v).encode() for v in (window_us, interval_us, cost_us, int(lim.dry_run))
            )
            self._argv[spec] = argv
        return argv

    def _check_command(
        self, limits: Sequence[Limit], bans: Sequence[BanCheck], tallies: Sequence[Tally] = ()
    ) -> Command:
        p = self._prefix
        if len(limits) == 1 and not bans and not tallies:  # one limit alone, unrolled
            lim = limits[0]
            return (self._link_evalsha, CHECK.sha, 1, p + lim.key, 1, 0, *self._limit_argv(lim))
        keys = []
        argv: list[bytes | int | str] = [len(limits), len(tallies)]
        for lim in limits:
            keys.append(p + lim.key)
            argv += self._limit_argv(lim)
        for ban in bans:
            pending = ban.fail_key if ban.pending_key is None else ban.pending_key
            keys += (p + ban.fail_key, p + ban.ban_key, p + pending)
            reserving = ban.pending_key is not None
            argv += (ban.limit if reserving else 0, ban.window_ms, ban.in_flight_here)
        for tally in tallies:
            keys.append(p + tally.key)
            argv += (tally.member or "", tally.limit, tally.window_ms)
        return (self._link_evalsha, CHECK.sha, len(keys), *keys, *argv)

    async def _check_limits_by_slot(self, limits: Sequence[Limit]) -> CheckResult:
        """:meth:`_check_by_slot` of limits alone (the rate limits of most requests)."""
        p = self._prefix
        if len(limits) == 2:  # per IP and per user: usually two slots, one limit in each
            first, second = limits
            slots = (redis_py.slot_of(p + first.key), redis_py.slot_of(p + second.key))
            if slots[0] != slots[1]:
                return await self._check_two_slots(first, second, slots)
        groups: dict[int, list[int]] = {}
        for i, lim in enumerate(limits):
            groups.setdefault(redis_py.slot_of(p + lim.key), []).append(i)
        if len(groups) == 1:  # one client's keys share a slot: one call, nothing to undo
            [slot] = groups
            raw = await self._link.call(self._check_command(limits, ()), slot)
            return _decode_check(raw, len(limits), 0)
        parts = list(groups.items())
        raws = await self._link.many(
            [(self._check_command([limits[i] for i in group], ()), slot) for slot, group in parts]
        )
        states: list[LimitState] = [_UNSET] * len(limits)
        allowed = True
        charged: list[tuple[int, list[int]]] = []
        for (slot, group), raw in zip(parts, raws, strict=True):
            part = _decode_check(raw, len(group), 0)
            allowed = allowed and part.allowed
            kept = []
            for i, state in zip(group, part.limits, strict=True):
                states[i] = state
                if part.allowed and state.allowed:
                    kept.append(i)
            if kept:
                charged.append((slot, kept))
        if not allowed and charged:
            await self._refund(limits, charged, states)
        return CheckResult(allowed, tuple(states), ())

    async def _check_two_slots(
        self, first: Limit, second: Limit, slots: tuple[int, int]
    ) -> CheckResult:
        """Two limits in two slots: two one-limit calls in one pipeline; a refusal by
        one gives back what the other charged (as :meth:`_check_by_slot` does)."""
        command = self._check_command
        a, b = await self._link.many(
            [(command((first,), ()), slots[0]), (command((second,), ()), slots[1])]
        )
        # A one-limit call answers [allowed, allowed, remaining, reset, retry].
        states = [
            make_tuple(LimitState, (a[1] == 1, a[2], a[3], a[4])),
            make_tuple(LimitState, (b[1] == 1, b[2], b[3], b[4])),
        ]
        if a[0] == 1 and b[0] == 1:
            return make_tuple(CheckResult, (True, tuple(states), (), ()))
        charged = [(slots[i], [i]) for i, raw in enumerate((a, b)) if raw[0] == 1 and raw[1] == 1]
        if charged:
            await self._refund((first, second), charged, states)
        return CheckResult(False, tuple(states), ())

    async def _check_by_slot(
        self, limits: Sequence[Limit], bans: Sequence[BanCheck], tallies: Sequence[Tally]
    ) -> CheckResult:
        """Cluster: one ``check.lua`` call per hash slot, all in one pipeline.

        Each call is all-or-nothing in its slot. When one refuses (or finds a ban)
        while another charged or reserved, that is undone (``refund.lua`` and
        ``release.lua``, one more round trip, on refusals only), so a refused request
        costs none of its limits and holds no reservation.
        """
        p = self._prefix
        groups: dict[int, tuple[list[int], list[int], list[int]]] = {}
        for i, lim in enumerate(limits):
            groups.setdefault(self._slot(p + lim.key), ([], [], []))[0].append(i)
        for j, ban in enumerate(bans):
            ban_keys = [p + ban.fail_key, p + ban.ban_key]
            if ban.pending_key is not None:
                ban_keys.append(p + ban.pending_key)
            groups.setdefault(self._same_slot(ban_keys), ([], [], []))[1].append(j)
        for k, tally in enumerate(tallies):
            groups.setdefault(self._slot(p + tally.key), ([], [], []))[2].append(k)
        parts = list(groups.items())
        commands = [
            (
                self._check_command(
                    [limits[i] for i in li], [bans[j] for j in bi], [tallies[k] for k in ti]
                ),
                slot,
            )
            for slot, (li, bi, ti) in parts
        ]
        raws = await self._link.many(commands)
        limit_states: list[LimitState] = [_UNSET] * len(limits)
        ban_states: list[BanState] = [_NO_BAN] * len(bans)
        tally_states: list[BanState] = [_NO_BAN] * len(tallies)
        allowed = True
        charged: list[tuple[int, list[int]]] = []
        reserved: list[Release] = []
        for (slot, (li, bi, ti)), raw in zip(parts, raws, strict=True):
            part = _decode_check(raw, len(li), len(bi), len(ti))
            allowed = allowed and part.allowed
            if part.allowed:
                group = [i for i, state in zip(li, part.limits, strict=True) if state.allowed]
                if group:
                    charged.append((slot, group))
                reserved += [
                    Release(tallies[k].key, tallies[k].member or "")
                    for k in ti
                    if tallies[k].member is not None
                ]
                reserved += [
                    Release(bans[j].pending_key or "", None)
                    for j, state in zip(bi, part.bans, strict=True)
                    if state.reserved
                ]
            for i, state in zip(li, part.limits, strict=True):
                limit_states[i] = state
            for j, ban_state in zip(bi, part.bans, strict=True):
                ban_states[j] = ban_state
            for k, tally_state in zip(ti, part.tallies, strict=True):
                tally_states[k] = tally_state
        if not allowed and (charged or reserved):
            await self._refund(limits, charged, limit_states, reserved)
            ban_states = [b._replace(reserved=False) for b in ban_states]
        return CheckResult(allowed, tuple(limit_states), tuple(ban_states), tuple(tally_states))

    async def _refund(
        self,
        limits: Sequence[Limit],
        groups: list[tuple[int, list[int]]],
        states: list[LimitState],
        reserved: Sequence[Release] = (),
    ) -> None:
        p = self._prefix
        commands: list[Item] = []
        for slot, group in groups:
            argv = [v for i in group for v in self._limit_argv(limits[i])]
            keys = [p + limits[i].key for i in group]
            commands.append(((self._link_evalsha, REFUND.sha, len(keys), *keys, *argv), slot))
        releases = self._release_commands(reserved) if reserved else []
        raws = await self._link.many(commands + releases)
        for (_, group), raw in zip(groups, raws, strict=False):
            for n, i in enumerate(group):
                states[i] = LimitState(True, raw[2 * n], raw[2 * n + 1], 0)

    def _slot(self, key: str | bytes) -> int:
        if not self._cluster:
            return 0
        return redis_py.slot_of(key)

    def _same_slot(self, keys: list[str]) -> int:
        if not self._cluster:
            return 0
        slots = {self._slot(k) for k in keys}
        if len(slots) > 1:
            raise ValueError(f"keys {keys!r} must share a Redis Cluster slot: use a {{hash tag}}")
        return slots.pop()

    def _unlinks(self, keys: Sequence[Any], prefixed: bool = False) -> list[Item]:
        """``UNLINK`` commands for ``keys``, one per hash slot."""
        groups: dict[int, list[Any]] = {}
        for key in keys:
            full = key if prefixed else self._prefix + key
            groups.setdefault(self._slot(full), []).append(full)
        return [(("UNLINK", *group), slot) for slot, group in groups.items()]
