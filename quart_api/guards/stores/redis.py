"""Redis counter store: every check of a request in one Lua script, one round trip.

Capability: atomic check-and-charge of several GCRA limits plus ban reads and
failure-tally reservations (``check.lua``, all-or-nothing), failure counting with
escalating bans (``fail.lua``) and giving tally reservations back (``release.lua``),
shared by every worker and host that uses the same Redis.
URLs: ``redis://``, ``rediss://``, ``unix://`` and ``redis+cluster://h1:p1,h2:p2``.

Speed: scripts are called by SHA (``EVALSHA``) and reloaded by themselves after
``NOSCRIPT`` (a restart or failover). With ``batch=True`` the calls made in one
event-loop tick by concurrent requests go out as ONE pipeline, so under load a
request costs well under one round trip (``round_trips / calls`` measures it).

Bounds (``_redis_link.py`` does the talking): waiting for a free connection is not
an outage (a burst queues, never slips through a fail-open limit), so it waits up
to ``pool_timeout``; opening a connection is bounded by ``connect_timeout``; the
commands by ``timeout``. A connection whose reply was cut off is disconnected,
never reused. Every client error leaves through one choke point (``_map_errors``)
as :class:`StoreError` (:class:`StoreTimeout` for timeouts).

Cluster: the keys of one script call must share a hash slot, so a request's keys
are grouped by slot and each group is one ``check.lua`` call (same pipeline, so
still one round trip). Each call is all-or-nothing in its slot; when one refuses
while another charged, the charged ones are refunded by ``refund.lua`` and
``release.lua`` (one more round trip, on refusals only), so a refused request costs
none of its limits and reserves no tally attempt. Keys
sharing a ``{hash tag}`` share a slot (a per-client tag makes it one call). The two
or three keys of one ban (``BanCheck``, ``Failure``) must share a slot
(``ValueError`` otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.crc import key_slot

from ..errors import ConfigurationError, redact
from ._redis_link import CHECK, FAIL, REFUND, RELEASE, Command, RedisLink
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
    validate_failure,
    validate_tally,
)

__all__ = ["SCHEMES", "RedisCounterStore", "parse_cluster_url"]

SCHEMES = ("redis", "rediss", "unix", "redis+cluster")

_UNSET = LimitState(False, 0, 0, 0)
_NO_BAN = BanState(False, 0, 0)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """``redis+cluster://[user:password@]h1:p1,h2:p2`` -> startup nodes and credentials."""
    rest = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hosts = rest.rpartition("@")
    shown = redact(url)
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"REDIS_URL {shown!r}: {part!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    auth = {}
    if userinfo:
        user, sep, password = userinfo.partition(":")
        auth = {"username": user, "password": password} if sep else {"password": user}
        auth = {k: v for k, v in auth.items() if v}
    return nodes, auth


def _decode_check(raw: list[int], n: int, m: int, t: int = 0) -> CheckResult:
    end = 1 + 4 * n
    limits = tuple(
        [LimitState(raw[i] == 1, raw[i + 1], raw[i + 2], raw[i + 3]) for i in range(1, end, 4)]
    )
    bans = tuple(
        [BanState(raw[i] == 1, raw[i + 1], raw[i + 2]) for i in range(end, end + 3 * m, 3)]
    )
    if not t:
        return CheckResult(raw[0] == 1, limits, bans)
    start = end + 3 * m
    tallies = tuple(
        [BanState(raw[i] == 1, raw[i + 1], raw[i + 2]) for i in range(start, start + 3 * t, 3)]
    )
    return CheckResult(raw[0] == 1, limits, bans, tallies)


class RedisCounterStore(CounterStore):
    """Counters in Redis or a Redis Cluster (see the module docstring).

    Args:
        url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://h1:p1,h2:p2``.
        timeout: bound in seconds on the commands of one call (``STORE_TIMEOUT``).
        max_connections: connections per server; more concurrent calls queue.
        batch: pipeline the calls of one event-loop tick into one round trip.
        key_prefix: prepended to every key (and to ``delete_matching`` patterns).
        connect_timeout: bound on opening a connection (cluster: on discovery).
        pool_timeout: bound on waiting for a free connection.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        max_connections: int = 64,
        batch: bool = True,
        key_prefix: str = "",
        connect_timeout: float = 0.5,
        pool_timeout: float = 5.0,
    ) -> None:
        scheme = url.partition("://")[0].lower()
        if scheme not in SCHEMES:
            raise ConfigurationError(f"REDIS_URL {redact(url)!r}: scheme must be one of {SCHEMES}")
        cluster_nodes = parse_cluster_url(url) if scheme == "redis+cluster" else None
        self._cluster = cluster_nodes is not None
        self._prefix = key_prefix
        self._link = RedisLink(
            url,
            cluster_nodes,
            timeout=timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            max_connections=max_connections,
            batch=batch,
        )
        self._evalsha = self._link.evalsha
        #: script calls asked for (check / record_failure); see also ``round_trips``.
        self.calls = 0
        self._argv: dict[tuple[int, int, int, bool], tuple[bytes, ...]] = {}

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
        """Check and charge ``limits``, read ``bans``, reserve ``tallies``: one ``check.lua``."""
        if not limits and not bans and not tallies:
            return CheckResult(True, (), ())
        for tally in tallies:
            validate_tally(tally)
        self.calls += 1
        if not self._cluster:
            raw = await self._link.call(self._check_command(limits, bans, tallies))
            return _decode_check(raw, len(limits), len(bans), len(tallies))
        return await self._check_by_slot(limits, bans, tallies)

    async def release(self, releases: Sequence[Release]) -> None:
        """Give back reserved tally attempts: one ``release.lua`` call per hash slot."""
        if not releases:
            return
        self.calls += 1
        await self._many(self._release_commands(releases))

    def _release_commands(self, releases: Sequence[Release]) -> list[Command]:
        p = self._prefix
        groups: dict[int, list[Release]] = {}
        for release in releases:
            slot = key_slot((p + release.key).encode()) if self._cluster else 0
            groups.setdefault(slot, []).append(release)
        return [
            (
                self._evalsha,
                RELEASE.sha,
                len(group),
                *(p + r.key for r in group),
                *(v for r in group for v in (r.member, r.attempts)),
            )
            for group in groups.values()
        ]

    async def record_failure(self, failure: Failure) -> BanState:
        """Count one failure, ban at the limit: one ``fail.lua`` call."""
        validate_failure(failure)
        p = self._prefix
        keys = [p + failure.fail_key, p + failure.ban_key]
        if failure.offence_key is not None:
            keys.append(p + failure.offence_key)
        self._same_slot(keys)
        self.calls += 1
        raw = await self._link.call(
            (
                self._evalsha,
                FAIL.sha,
                len(keys),
                *keys,
                failure.limit,
                failure.window_ms,
                failure.max_ban_ms,
            )
        )
        return BanState(raw[0] == 1, raw[1], raw[2])

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._link.commands([("UNLINK", *g) for g in self._by_slot(keys)])

    async def delete_matching(self, pattern: str) -> int:
        """SCAN (every master of a cluster) and UNLINK the keys matching ``pattern``."""
        match = self._prefix + pattern
        deleted = 0
        for node in await self._link.targets():
            cursor: Any = b"0"
            while True:
                scan = ("SCAN", cursor, "MATCH", match, "COUNT", 1000)
                cursor, found = await self._link.on_node(node, scan)
                if found:
                    unlinked = await self._link.commands(
                        [("UNLINK", *g) for g in self._by_slot(found)]
                    )
                    deleted += sum(unlinked)
                if int(cursor) == 0:
                    break
        return deleted

    async def ping(self) -> None:
        for node in await self._link.targets():
            await self._link.on_node(node, ("PING",))

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        """Drop every connection; the next call reconnects."""
        await self._link.close()

    # --- building script calls ---------------------------------------------------

    def _limit_argv(self, lim: Limit) -> tuple[bytes, ...]:
        spec = (lim.limit, lim.window_ms, lim.cost, lim.dry_run)
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
        keys = [p + lim.key for lim in limits]
        argv: list[bytes | int | str] = [len(limits), len(tallies)]
        for lim in limits:
            argv += self._limit_argv(lim)
        for ban in bans:
            keys += (p + ban.fail_key, p + ban.ban_key)
        for tally in tallies:
            keys.append(p + tally.key)
            argv += (tally.member or "", tally.limit, tally.window_ms)
        return (self._evalsha, CHECK.sha, len(keys), *keys, *argv)

    async def _check_by_slot(
        self, limits: Sequence[Limit], bans: Sequence[BanCheck], tallies: Sequence[Tally]
    ) -> CheckResult:
        """Cluster: one ``check.lua`` call per hash slot, all in one pipeline.

        Each call is all-or-nothing in its slot. When one refuses (or finds a ban)
        while another charged, the charged ones are refunded (``refund.lua`` and
        ``release.lua``, one more round trip, on refusals only), so a refused request
        costs none of its limits and holds no tally reservation.
        """
        p = self._prefix
        groups: dict[int, tuple[list[int], list[int], list[int]]] = {}
        for i, lim in enumerate(limits):
            groups.setdefault(key_slot((p + lim.key).encode()), ([], [], []))[0].append(i)
        for j, ban in enumerate(bans):
            slot = self._same_slot([p + ban.fail_key, p + ban.ban_key])
            groups.setdefault(slot, ([], [], []))[1].append(j)
        for k, tally in enumerate(tallies):
            groups.setdefault(key_slot((p + tally.key).encode()), ([], [], []))[2].append(k)
        parts = list(groups.values())
        commands = [
            self._check_command(
                [limits[i] for i in li], [bans[j] for j in bi], [tallies[k] for k in ti]
            )
            for li, bi, ti in parts
        ]
        raws = await self._many(commands)
        limit_states: list[LimitState] = [_UNSET] * len(limits)
        ban_states: list[BanState] = [_NO_BAN] * len(bans)
        tally_states: list[BanState] = [_NO_BAN] * len(tallies)
        allowed = True
        charged: list[list[int]] = []
        reserved: list[Release] = []
        for (li, bi, ti), raw in zip(parts, raws, strict=True):
            part = _decode_check(raw, len(li), len(bi), len(ti))
            allowed = allowed and part.allowed
            if part.allowed:
                charged.append(
                    [i for i, state in zip(li, part.limits, strict=True) if state.allowed]
                )
                reserved += [
                    Release(tallies[k].key, tallies[k].member or "")
                    for k in ti
                    if tallies[k].member is not None
                ]
            for i, state in zip(li, part.limits, strict=True):
                limit_states[i] = state
            for j, ban_state in zip(bi, part.bans, strict=True):
                ban_states[j] = ban_state
            for k, tally_state in zip(ti, part.tallies, strict=True):
                tally_states[k] = tally_state
        charged = [group for group in charged if group]
        if not allowed and (charged or reserved):
            await self._refund(limits, charged, limit_states, reserved)
        return CheckResult(allowed, tuple(limit_states), tuple(ban_states), tuple(tally_states))

    async def _refund(
        self,
        limits: Sequence[Limit],
        groups: list[list[int]],
        states: list[LimitState],
        reserved: Sequence[Release] = (),
    ) -> None:
        p = self._prefix
        commands: list[Command] = []
        for group in groups:
            argv = [v for i in group for v in self._limit_argv(limits[i])]
            keys = [p + limits[i].key for i in group]
            commands.append((self._evalsha, REFUND.sha, len(keys), *keys, *argv))
        releases = self._release_commands(reserved) if reserved else []
        raws = await self._many(commands + releases)
        for group, raw in zip(groups, raws, strict=False):
            for n, i in enumerate(group):
                states[i] = LimitState(True, raw[2 * n], raw[2 * n + 1], 0)

    async def _many(self, commands: list[Command]) -> list[Any]:
        if self._link.batch:
            return list(await asyncio.gather(*(self._link.submit(c) for c in commands)))
        return await self._link.commands(commands)

    def _same_slot(self, keys: list[str]) -> int:
        if not self._cluster:
            return 0
        slots = {key_slot(k.encode()) for k in keys}
        if len(slots) > 1:
            raise ValueError(f"keys {keys!r} must share a Redis Cluster slot: use a {{hash tag}}")
        return slots.pop()

    def _by_slot(self, keys: Sequence[Any]) -> list[list[Any]]:
        if not self._cluster:
            return [[self._prefix + k if isinstance(k, str) else k for k in keys]]
        groups: dict[int, list[Any]] = {}
        for k in keys:
            k = (self._prefix + k).encode() if isinstance(k, str) else k
            groups.setdefault(key_slot(k), []).append(k)
        return list(groups.values())
