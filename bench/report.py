"""The benchmark's outputs: medians and ratios, the speed targets, table, JSON, chart.

Medians, not means: one run disturbed by the machine (a GC pause, a noisy
neighbour) must not move the result. Two ratios to bare, because a shared host fails
each differently: "x bare" divides a route's median requests/s by bare's (the host's
speed moved by a third within one run, so a slow stretch can hit one route's runs
more than bare's), and "paired" is the median of each run over the mean of the two
bare runs around it (drift cancels, but bare is always measured right after another
route: on this host that made bare look slower, so identical code measured 1.07-1.20
"paired"). A target holds only if both ratios say so. The numbers compare routes, not
machines or days.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.routes import Route

__all__ = ["build_report", "print_report", "write_chart", "write_json"]

#: (route, what is compared, threshold): issue 15's targets at 1 worker, 64 connections,
#: and issue 6's against the peer rate limiter (a cache hit is no longer compared with
#: aiocache's: a hit cannot beat a route that does nothing).
_RATIO_TARGETS: tuple[tuple[str, str, float], ...] = (
    ("guards-installed", "bare", 0.98),
    ("rate_limited", "bare", 0.95),
    ("rate_limited", "quart-rate-limiter", 2.0),
    ("cached", "bare", 0.98),
    ("full-stack", "bare", 0.90),
    ("db-uncached", "bare", 0.35),
)
#: (route, base, what the ratio isolates): comparisons without a target, for reading.
_REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("full-stack", "bare-users-body", "auth, guards and service on top of the same body"),
)
_COST_KEYS = (
    ("redis_commands_per_request", "redis cmds (incl. in Lua)"),
    ("redis_evalsha_per_request", "evalsha"),
    ("redis_reads_per_request", "redis reads"),
    ("store_round_trips_per_request", "store round trips"),
    ("memcached_gets_per_request", "memcached gets"),
    ("guard_rate_allowed_per_request", "limits checked"),
    ("guard_cache_hit_per_request", "cache hits"),
    ("guard_fail_open_per_request", "failed open"),
    ("database_cpu_us_per_request", "postgres cpu us"),
)
_FAIL_OPEN_KEYS = tuple(
    f"guard_{store}_{what}_per_request"
    for store in ("redis", "memcached")
    for what in ("errors", "skipped")
)
#: A run during which other processes used this much of a core measured a busy machine.
_BUSY_CORES = 0.1


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _spread(values: Sequence[float]) -> float | None:
    middle = _median(values)
    if not middle or len(values) < 2:
        return None
    return round((max(values) - min(values)) / 2 / middle, 3)


def _summarize(route: Route, runs: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for run in runs:
        for code, n in run["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    for run in runs:
        costs = run["per_request"]
        if any(key in costs for key in _FAIL_OPEN_KEYS):
            costs["guard_fail_open_per_request"] = round(
                sum(costs.get(key, 0.0) for key in _FAIL_OPEN_KEYS), 4
            )
    cost_keys = sorted({key for run in runs for key in run["per_request"]})
    return {
        "route": route.name,
        "app": route.app,
        "path": route.path_template or route.path,
        "what": route.what,
        "peer_of": route.peer_of,
        "rps": _median([run["rps"] for run in runs]),
        # Half the range over the rounds, relative to the median: the noise that a
        # difference between two ratios has to beat to mean anything.
        "rps_spread": _spread([run["rps"] for run in runs]),
        "p50_ms": _median([run["latency_ms"]["p50"] for run in runs]),
        "p99_ms": _median([run["latency_ms"]["p99"] for run in runs]),
        "server_cpu_us": _median(
            [
                run["server_cpu_us_per_request"]
                for run in runs
                if run.get("server_cpu_us_per_request")
            ]
        ),
        "server_cpu_cores": _median(
            [run["server_cpu_cores"] for run in runs if run.get("server_cpu_cores") is not None]
        ),
        "requests": sum(run["requests"] for run in runs),
        "socket_errors": sum(run["socket_errors"] for run in runs),
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "statuses": dict(sorted(statuses.items())),
        "foreign_cpu_cores_max": max(
            (run.get("foreign_cpu_cores", 0.0) for run in runs), default=0
        ),
        "per_request": {
            key: _median([run["per_request"][key] for run in runs if key in run["per_request"]])
            for key in cost_keys
        },
        "runs": runs,
    }


def _paired_ratio(summary: dict[str, Any]) -> float | None:
    """The median of the route's runs, each over the mean of the two bare runs around it.

    (``--smoke`` measures bare once per round, and pairs each run with that.) Also
    keeps the per-run ratios in ``summary["ratio_runs"]``, for the JSON.
    """
    if summary["route"] == "bare":
        return 1.0
    paired = [
        round(run["rps"] / run["bare_rps_around"], 3)
        for run in summary["runs"]
        if run.get("bare_rps_around")
    ]
    summary["ratio_runs"] = paired
    return round(statistics.median(paired), 3) if paired else None


def _both_ratios(
    summaries: dict[str, dict[str, Any]], name: str, base: str
) -> tuple[float, float | None] | None:
    """``name`` over ``base``: as a ratio of medians, and paired (each as ratios to bare)."""
    route, other = summaries.get(name), summaries.get(base)
    if route is None or other is None or not route["rps"] or not other["rps"]:
        return None
    medians = route["rps"] / other["rps"]
    paired = (
        route["paired_ratio_to_bare"] / other["paired_ratio_to_bare"]
        if route["paired_ratio_to_bare"] and other["paired_ratio_to_bare"]
        else None
    )
    return round(medians, 3), None if paired is None else round(paired, 3)


def _scan_logs(logs: Path) -> dict[str, Any]:
    """Tracebacks and error lines the servers logged: problems under load show up here."""
    found: dict[str, Any] = {}
    for path in sorted(logs.glob("*.log")) if logs.exists() else []:
        text = path.read_text(errors="replace")
        lines = text.splitlines()
        # Anything but hypercorn's start-up lines: the guards log fail-open warnings
        # without a level prefix, so every other line is worth reading.
        noise = re.compile(r"\[INFO\]|^\s*$")
        bad = [line for line in lines if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)]
        warnings = [line for line in lines if not noise.search(line) and line not in bad]
        found[path.stem] = {
            "log": str(path),
            "tracebacks": text.count("Traceback (most recent call last)"),
            "error_lines": len(bad),
            "other_lines": len(warnings),
            "samples": list(dict.fromkeys(line.strip()[:240] for line in bad + warnings))[:6],
        }
    return found


def build_report(
    *,
    meta: dict[str, Any],
    routes: list[Route],
    runs: dict[str, list[dict[str, Any]]],
    skipped: dict[str, str],
    high: dict[str, Any] | None,
    notes: list[str],
    logs: Path,
    profiles: dict[str, dict[str, Any]],
    error: str | None,
) -> dict[str, Any]:
    """Everything measured, as one JSON-ready dict."""
    summaries = {r.name: _summarize(r, runs[r.name]) for r in routes if runs.get(r.name)}
    bare = summaries.get("bare", {}).get("rps")
    for summary in summaries.values():
        rps = summary["rps"]
        summary["ratio_to_bare"] = round(rps / bare, 3) if bare and rps is not None else None
        summary["paired_ratio_to_bare"] = _paired_ratio(summary)
    targets = []
    for name, base, threshold in _RATIO_TARGETS:
        both = _both_ratios(summaries, name, base)
        if both is not None:
            # Two estimates that fail differently on a noisy host (see the module
            # docstring): a target holds only if both say so.
            medians, paired = both
            value = medians if paired is None else min(medians, paired)
            failed_open = summaries[name]["per_request"].get("guard_fail_open_per_request") or 0.0
            if failed_open > 0.001:
                # Skipped checks are fast: a ratio earned by failing open does not count.
                targets.append(
                    {
                        "target": f"{name} >= {threshold} x {base}",
                        "value": value,
                        "medians": medians,
                        "paired": paired,
                        "ok": False,
                        "why": f"guards failed open on {failed_open:.1%} of requests",
                    }
                )
                continue
            targets.append(
                {
                    "target": f"{name} >= {threshold} x {base}",
                    "value": value,
                    "medians": medians,
                    "paired": paired,
                    "ok": value >= threshold,
                }
            )
    if high is not None:
        ok = high["socket_errors"] == 0 and not any(c.startswith("5") for c in high["statuses"])
        targets.append(
            {
                "target": f"{high['connections']} connections on {high['route']}: "
                "0 socket errors, 0 5xx",
                "value": high["latency_ms"]["p99"],
                "ok": ok,
            }
        )
    references = [
        {"route": name, "base": base, "medians": both[0], "paired": both[1], "what": what}
        for name, base, what in _REFERENCES
        if (both := _both_ratios(summaries, name, base)) is not None
    ]
    limited = summaries.get("rate_limited", {}).get("per_request", {})
    return {
        "meta": meta,
        "error": error,
        "routes": list(summaries.values()),
        "skipped": skipped,
        "round_trips": {
            "route": "rate_limited",
            "connections": meta["connections"],
            **{key: limited.get(key) for key, _ in _COST_KEYS},
            "store_calls_per_request": limited.get("store_calls_per_request"),
        },
        "high_concurrency": high,
        "targets": targets,
        "references": references,
        "notes": notes,
        "server_logs": _scan_logs(logs),
        "profiles": profiles,
    }


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(headers: Sequence[str], rows: list[list[str]], right: Callable[[int], bool]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if right(i) else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def print_report(report: dict[str, Any], json_path: Path, chart: Path | None) -> None:
    """The table of routes, the costs per request, the targets, and what went wrong."""
    meta = report["meta"]
    print()
    print(
        f"quart-api bench @ {meta['commit']}: {meta['workers']} worker(s), "
        f"{meta['connections']} connections, median of {meta['rounds']} x {meta['duration_s']} s "
        f"interleaved rounds; {meta['pinning']['note']}"
    )
    rows = [
        [
            s["route"],
            _fmt(s["rps"], ",.0f"),
            "-" if s["rps_spread"] is None else f"±{s['rps_spread']:.0%}",
            _fmt(s["p50_ms"], ".2f"),
            _fmt(s["p99_ms"], ".2f"),
            str(s["socket_errors"] + s["non_2xx"]),
            " ".join(f"{code}:{n}" for code, n in s["statuses"].items()) or "-",
            _fmt(s["ratio_to_bare"], ".3f"),
            _fmt(s["paired_ratio_to_bare"], ".3f"),
            _fmt(s["server_cpu_us"], ".0f"),
            _fmt(s["server_cpu_cores"], ".2f"),
        ]
        for s in report["routes"]
    ]
    headers = [
        "route", "req/s", "spread", "p50 ms", "p99 ms", "errors", "statuses", "x bare",
        "paired", "cpu us/req", "server cores",
    ]  # fmt: skip
    print(_table(headers, rows, lambda i: i not in (0, 6)))
    print(
        "(cpu us/req: the hypercorn app's user + system CPU per request; server cores: its CPU "
        "over the run, 1.00 per worker when the load saturates it, as the ratios assume)"
    )
    print()
    cost_rows = [
        [s["route"], *(_fmt(s["per_request"].get(key), ".3f") for key, _ in _COST_KEYS)]
        for s in report["routes"]
    ]
    print("store cost per request (median over rounds):")
    print(_table(["route", *(label for _, label in _COST_KEYS)], cost_rows, lambda i: i > 0))
    trips = report["round_trips"]
    if trips.get("redis_evalsha_per_request") is not None:
        print(
            f"\nRedis round trips per request, rate_limited at {trips['connections']} connections: "
            f"{_fmt(trips['store_round_trips_per_request'], '.3f')} (guards' counter; "
            f"{_fmt(trips['redis_reads_per_request'], '.3f')} read events seen by Redis) for "
            f"{_fmt(trips['redis_evalsha_per_request'], '.3f')} EVALSHA and "
            f"{_fmt(trips['redis_commands_per_request'], '.3f')} commands per request"
        )
    high = report["high_concurrency"]
    if high is not None:
        latency = high["latency_ms"]
        print(
            f"\nhigh concurrency: {high['connections']} connections for {high['duration_s']:.0f} s "
            f"on {high['route']}: {high['rps']:,.0f} req/s, p50 {latency['p50']:.1f} ms, "
            f"p99 {latency['p99']:.1f} ms, max {latency['max']:.1f} ms, "
            f"socket errors {high['socket_errors']} {high['errors']}, statuses {high['statuses']}"
        )
    if report["targets"]:
        print("\ntargets (issues 6 and 15):")
        for target in report["targets"]:
            why = f" ({target['why']})" if target.get("why") else ""
            if target.get("medians") is not None:
                why += f" (medians {target['medians']}, paired {_fmt(target['paired'], '.3f')})"
            print(
                f"  [{'ok' if target['ok'] else 'MISS'}] {target['target']}: {target['value']}{why}"
            )
    for ref in report.get("references", []):
        print(
            f"reference: {ref['route']} = {ref['medians']} x {ref['base']} (paired "
            f"{_fmt(ref['paired'], '.3f')}): {ref['what']}"
        )
    busy = [s for s in report["routes"] if s["foreign_cpu_cores_max"] >= _BUSY_CORES]
    if busy:
        worst = max(s["foreign_cpu_cores_max"] for s in busy)
        print(
            f"\nWARNING: other processes used up to {worst:.2f} of a core during "
            f"{len(busy)} route(s) ({', '.join(s['route'] for s in busy)}): the machine was "
            "not quiet, so these numbers are noisier than they should be; rerun when it is."
        )
    for name, reason in report["skipped"].items():
        print(f"skipped {name}: {reason}")
    for note in report["notes"]:
        print(f"note: {note}")
    for app, found in report["server_logs"].items():
        if found["tracebacks"] or found["error_lines"] or found["other_lines"]:
            print(
                f"server log {app}: {found['tracebacks']} tracebacks, {found['error_lines']} error "
                f"lines, {found['other_lines']} other lines ({found['log']})"
            )
            for sample in found["samples"]:
                print(f"    {sample}")
    for route, result in report["profiles"].items():
        if "error" in result:
            print(f"profile {route}: {result['error']}")
            continue
        print(f"\nprofile {route} ({result['samples']} busy samples, stacks {result['stacks']}):")
        for title, key in (("inclusive", "inclusive"), ("quart_api", "ours"), ("self", "self")):
            print(f"  top by {title}:")
            for entry in result[key]:
                print(f"    {entry['share']:6.1%}  {entry['frame']}")
    print(
        f"\nresults: {json_path}"
        + (f", chart: {chart}" if chart else " (no chart: matplotlib missing)")
    )
    print(f"elapsed: {meta['elapsed_s']} s")


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Throughput and p99 per route as a PNG (matplotlib, Agg); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    routes = [s for s in report["routes"] if s["rps"] is not None]
    if not routes:
        return None
    names = [s["route"] for s in routes][::-1]
    rps = [s["rps"] for s in routes][::-1]
    p99 = [s["p99_ms"] for s in routes][::-1]

    def colour(summary: dict[str, Any]) -> str:
        if summary["route"] == "bare":
            return "#888888"
        if summary["peer_of"]:
            return "#e08a2c"
        return "#2a9d58" if summary["app"] == "service" else "#2f6db5"

    colours = [colour(s) for s in routes][::-1]
    meta = report["meta"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.5 * len(routes) + 2.2), sharey=True)
    left.barh(names, rps, color=colours)
    for y, summary in enumerate(routes[::-1]):
        ratio = summary["ratio_to_bare"]
        label = f"{summary['rps']:,.0f}" + (f"  ({ratio:.2f}x bare)" if ratio is not None else "")
        left.text(summary["rps"], y, " " + label, va="center", fontsize=8)
    left.set_xlabel("requests/s (median)")
    left.set_xlim(0, max(rps) * 1.45)
    right.barh(names, p99, color=colours)
    for y, value in enumerate(p99):
        right.text(value, y, f" {value:.1f} ms", va="center", fontsize=8)
    right.set_xlabel("p99 latency, ms (median)")
    right.set_xlim(0, max(p99) * 1.3)
    fig.suptitle(
        f"quart-api bench @ {meta['commit']}: {meta['workers']} worker(s), "
        f"{meta['connections']} connections, median of {meta['rounds']} x "
        f"{meta['duration_s']} s (grey: bare, blue: guards, green: service, orange: peers)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
