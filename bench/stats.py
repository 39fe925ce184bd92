"""Store-side counters read before and after each run, to get costs per request.

- Redis ``INFO commandstats``: calls per command (``evalsha`` for the guards' Lua
  script, ``get``/``set`` for quart-rate-limiter). Commands a Lua script runs
  (``TIME``, ``GET``, ``SET`` inside ``check.lua``) count too, so "commands" is work
  done by Redis, not network traffic; a pipeline of N calls counts N ``EVALSHA``.
- Redis ``INFO stats`` ``total_reads_processed``: read events on client sockets, a
  server-side proxy for round trips (a pipeline of N calls is usually one read).
- The guards' own counters (``calls``, ``round_trips`` of the Redis store), from the
  app's ``/_bench/stats`` route: exact round trips, counted by the client; and the
  guards' metrics (rate checks allowed, cache hits, store errors and breaker skips),
  which show whether a guard really ran or failed open.
- memcached ``stats``: ``cmd_get`` (keys fetched) and hits/misses.

Our own ``INFO`` calls are left out of the command counts; their reads (one or two
per snapshot) are within noise of the tens of thousands of requests measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import redis

from bench.serve import http_get

__all__ = [
    "Snapshot",
    "foreign_cores",
    "foreign_cpu_ticks",
    "per_request",
    "server_cpu_seconds",
    "snapshot",
]

Snapshot = dict[str, float]


def _redis(host: str, port: int) -> Snapshot:
    with redis.Redis(host, port, socket_timeout=5, socket_connect_timeout=5) as client:
        commands: dict[str, Any] = client.info("commandstats")
        stats: dict[str, Any] = client.info("stats")
    calls = {
        name.removeprefix("cmdstat_"): float(value["calls"])
        for name, value in commands.items()
        if name != "cmdstat_info"
    }
    return {
        "redis_commands": sum(calls.values()),
        "redis_evalsha": calls.get("evalsha", 0.0),
        "redis_reads": float(stats.get("total_reads_processed", 0)),
        **{f"redis_cmd_{name}": n for name, n in calls.items()},
    }


def _memcached(host: str, port: int) -> Snapshot:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"stats\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    values: dict[str, str] = {}
    for line in reply.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            values[parts[1]] = parts[2]
    return {
        "memcached_gets": float(values.get("cmd_get", 0)),
        "memcached_hits": float(values.get("get_hits", 0)),
    }


def _app(base_url: str) -> Snapshot:
    with contextlib.suppress(OSError, ValueError):
        status, body = http_get(base_url + "/_bench/stats", timeout=5)
        if status == 200:
            data = json.loads(body)
            return {
                key: float(value) for key, value in data.items() if isinstance(value, int | float)
            }
    return {}


def snapshot(
    redis_addr: tuple[str, int], memcached_addr: tuple[str, int], app_url: str | None
) -> Snapshot:
    """Every counter above, now."""
    values = _redis(*redis_addr) | _memcached(*memcached_addr)
    if app_url is not None:
        values |= _app(app_url)
    return values


def per_request(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
    """Each counter's growth over the run, divided by the requests wrk completed."""
    if requests <= 0:
        return {}
    return {
        f"{key}_per_request": round((after[key] - before.get(key, 0.0)) / requests, 4)
        for key in after
        if after[key] != before.get(key, 0.0) or not key.startswith("redis_cmd_")
    }


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError):
        return 100.0


def _stat_fields(pid: str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()  # fields from the 3rd (state) on


def _processes() -> dict[str, tuple[str, float, float]]:
    """Every live process: pid -> (parent pid, user ticks, system ticks)."""
    table: dict[str, tuple[str, float, float]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(entry.name)
        if fields is not None:
            table[entry.name] = (fields[1], float(fields[11]), float(fields[12]))
    return table


def _tree(root: int, table: dict[str, tuple[str, float, float]]) -> set[str]:
    """``root`` and its live descendants."""
    tree = {str(root)}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def server_sleeps(root: int) -> int:
    """Times the live processes of a server tree went to sleep so far (their voluntary
    context switches): each is one wait with nothing else to run, then one wake-up.

    Per request, it shows what waiting on a store costs beyond the bytecodes: workers
    that share a core pay a switch, and a cold cache, for every sleep.
    """
    table = _processes()
    total = 0
    for pid in _tree(root, table):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
                break
    return total


def server_cpu_seconds(root: int) -> float:
    """User + system CPU of a server process tree (``root`` and its children), in seconds.

    Over a run it tells whether the load saturated the server (one core per worker:
    the ratios compare capacities only then), and divided by the requests served,
    what one request cost it. Children that ended count too (their parent's
    ``cutime``/``cstime``): PostgreSQL's backend for a connection the pool closed
    did its share of the run's work.
    """
    table = _processes()
    ticks = 0.0
    for pid in _tree(root, table):
        if pid in table:
            ticks += table[pid][1] + table[pid][2]
            fields = _stat_fields(pid)
            if fields is not None:
                ticks += float(fields[13]) + float(fields[14])  # reaped children
    return ticks / _ticks_per_second()


def foreign_cpu_ticks() -> tuple[float, float]:
    """(user CPU of the whole machine, user CPU of this process tree), in clock ticks.

    Their growth over a run tells how much CPU processes that are not ours took
    (other test suites on a shared machine): such a run measured a busy machine.
    User time only, because the kernel's loopback networking for our own traffic is
    booked as system and softirq time to whoever happens to run.
    """
    try:
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0, 0.0
    machine = float(cpu[1]) + float(cpu[2])  # user + nice
    table = _processes()
    own = sum(table[pid][1] for pid in _tree(os.getpid(), table) if pid in table)
    me = _stat_fields(str(os.getpid()))
    if me is not None:
        own += float(me[13])  # cutime: children we reaped (each finished wrk)
    return machine, own


def foreign_cores(before: tuple[float, float], after: tuple[float, float], seconds: float) -> float:
    """Cores' worth of user CPU that other processes used between two readings."""
    if seconds <= 0:
        return 0.0
    foreign = (after[0] - before[0]) - (after[1] - before[1])
    return round(max(foreign, 0.0) / _ticks_per_second() / seconds, 3)
