"""The outputs of ``make cluster-bench``: summaries, the targets of issue 16, table, JSON, chart.

Ratios to bare come two ways, as in ``make bench`` (``bench/report.py`` says why):
of medians over the rounds, and paired (each run over the bare runs around it); a
target holds only when both say so, and a ratio earned while a rate limit failed
open (200s without a ``RateLimit`` header) does not count.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.cluster.sweep import summarize
from bench.routes import Route

__all__ = ["build_report", "print_readme_rows", "print_report", "write_json"]

TARGET_RTT = 1.0
#: (route, threshold): at TARGET_RTT, as a ratio to bare at the same RTT.
_RATIO_TARGETS = (("full-stack", 0.85), ("rate_limited", 0.90))
#: Routes whose every 200 should carry a RateLimit header.
_LIMITED = ("rate_limited", "rate_limited-sentinel", "full-stack", "growth")
_FAIL_OPEN_SHARE = 0.001
#: "Flat" growth: the largest size keeps this share of the smallest's paired ratio.
_FLAT = 0.95
_BUSY_CORES = 0.1


def _ratios(summaries: dict[str, dict[str, Any]]) -> None:
    bare = summaries.get("bare", {}).get("rps")
    for summary in summaries.values():
        summary["ratio_to_bare"] = (
            round(summary["rps"] / bare, 3) if bare and summary["rps"] else None
        )
    if "bare" in summaries:
        summaries["bare"]["paired_ratio_to_bare"] = 1.0


def _both(summaries: dict[str, dict[str, Any]], name: str, base: str) -> tuple[float, float] | None:
    """``name`` over ``base`` as (ratio of medians, ratio of paired ratios)."""
    a, b = summaries.get(name), summaries.get(base)
    if not a or not b or not a.get("ratio_to_bare") or not b.get("ratio_to_bare"):
        return None
    if not a.get("paired_ratio_to_bare") or not b.get("paired_ratio_to_bare"):
        return None
    return (
        round(a["ratio_to_bare"] / b["ratio_to_bare"], 3),
        round(a["paired_ratio_to_bare"] / b["paired_ratio_to_bare"], 3),
    )


def _failed_open(summary: dict[str, Any]) -> float:
    return summary["unchecked_200"] / summary["requests"] if summary.get("requests") else 0.0


def _targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    by_rtt = report["sweep"]
    at = by_rtt.get(f"{TARGET_RTT:g}", {}).get("routes", {})
    for name, threshold in _RATIO_TARGETS:
        both = _both(at, name, "bare")
        if both is None:
            continue
        value = min(both)
        target: dict[str, Any] = {
            "target": f"{name} >= {threshold} x bare at {TARGET_RTT:g} ms",
            "value": value,
            "medians": both[0],
            "paired": both[1],
            "ok": value >= threshold,
        }
        if _failed_open(at[name]) > _FAIL_OPEN_SHARE:
            target |= {"ok": False, "why": f"failed open on {_failed_open(at[name]):.1%}"}
        targets.append(target)
    leads = []
    for rtt, step in by_rtt.items():
        both = _both(step.get("routes", {}), "full-stack", "seed")
        if both is not None:
            leads.append((float(rtt), min(both)))
            targets.append(
                {
                    "target": f"full-stack ahead of the seed's stack at {rtt} ms",
                    "value": min(both),
                    "medians": both[0],
                    "paired": both[1],
                    "ok": min(both) > 1.0,
                }
            )
    if len(leads) >= 2:
        leads.sort()
        growing = all(b[1] >= a[1] * 0.95 for a, b in itertools.pairwise(leads))
        targets.append(
            {
                "target": "further ahead of the seed as RTT grows",
                "value": [lead for _, lead in leads],
                "ok": growing and leads[-1][1] > leads[0][1],
            }
        )
    for rtt, exact in report["exactness"].items():
        targets.append(
            {
                "target": f"exactness at {rtt} ms: admitted over the limit across hosts = 0",
                "value": exact["over_limit"],
                "ok": exact["over_limit"] == 0,
                **(
                    {
                        "why": f"{exact['unchecked_200']} failed open, "
                        f"{exact['over_limit_checked']} over by the store's count"
                    }
                    if exact["over_limit"]
                    else {}
                ),
            }
        )
    growth = report.get("growth")
    if growth and len(growth["steps"]) >= 2:
        first, last = growth["steps"][0], growth["steps"][-1]
        a, b = first["summary"], last["summary"]
        if a.get("paired_ratio_to_bare") and b.get("paired_ratio_to_bare"):
            value = round(b["paired_ratio_to_bare"] / a["paired_ratio_to_bare"], 3)
            targets.append(
                {
                    "target": f"cost flat from {first['clients']:,} to {last['clients']:,} "
                    f"clients (paired ratio kept >= {_FLAT})",
                    "value": value,
                    "cpu_us": [a.get("app_cpu_us_per_request"), b.get("app_cpu_us_per_request")],
                    "ok": value >= _FLAT and _failed_open(b) <= _FAIL_OPEN_SHARE,
                    **(
                        {"why": f"failed open on {_failed_open(b):.1%}"}
                        if _failed_open(b) > _FAIL_OPEN_SHARE
                        else {}
                    ),
                }
            )
    for kind, result in report["failover"].items():
        targets.append(
            {
                "target": f"failover ({kind}): 0 5xx",
                "value": result["server_errors_5xx"],
                "ok": result["server_errors_5xx"] == 0,
            }
        )
    return targets


def _scan_logs(logs: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(logs.glob("*.log")) if logs.exists() else []:
        text = path.read_text(errors="replace")
        bad = [
            line for line in text.splitlines() if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)
        ]
        warnings = [
            line
            for line in text.splitlines()
            if line.strip() and "[INFO]" not in line and line not in bad
        ]
        if bad or warnings:
            found[path.stem] = {
                "log": str(path),
                "tracebacks": text.count("Traceback (most recent call last)"),
                "error_lines": len(bad),
                "other_lines": len(warnings),
                "samples": list(dict.fromkeys(line.strip()[:200] for line in bad + warnings))[:4],
            }
    return found


def build_report(
    *,
    meta: dict[str, Any],
    routes: list[Route],
    sweep: dict[str, Any],
    exact: dict[str, Any],
    growth: dict[str, Any] | None,
    failovers: dict[str, Any],
    notes: list[str],
    logs: Path,
    error: str | None,
    profiles: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything measured, as one JSON-ready dict."""
    by_rtt: dict[str, Any] = {}
    for rtt, step in sweep.items():
        summaries = {
            route.name: {"what": route.what, **summarize(step["runs"][route.name])}
            for route in routes
            if step.get("runs", {}).get(route.name)
        }
        _ratios(summaries)
        by_rtt[rtt] = {"ping_ms": step["ping_ms"], "routes": summaries, "runs": step.get("runs")}
    if growth is not None:
        for step in growth["steps"]:
            step["summary"] = summarize(step["runs"])
    report: dict[str, Any] = {
        "meta": meta,
        "error": error,
        "sweep": by_rtt,
        "exactness": exact,
        "growth": growth,
        "failover": failovers,
        "profiles": profiles or {},
        "notes": notes,
    }
    report["targets"] = _targets(report)
    report["server_logs"] = _scan_logs(logs)
    return report


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(headers: Sequence[str], rows: list[list[str]], right: Callable[[int], bool]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if right(i) else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def print_report(report: dict[str, Any], json_path: Path, chart: Path | None) -> None:
    """The tables of issue 16, the targets, and what went wrong."""
    meta = report["meta"]
    print()
    print(
        f"quart-api cluster-bench @ {meta['commit']}: {len(meta['app_hosts'])} app hosts x "
        f"{meta['workers_per_host']} workers, {meta['connections']} connections, median of "
        f"{meta['rounds']} x {meta['duration_s']} s rounds; {meta['pinning']['note']}"
    )
    headers = [
        "route", "req/s", "p50 ms", "p99 ms", "x bare", "paired", "app us/req", "app cores",
        "sleeps/req", "relay cores", "load busy", "redis trips/req", "redis cmds/req",
        "mc gets/req", "errors", "unchecked",
    ]  # fmt: skip
    for rtt, step in report["sweep"].items():
        ping = step["ping_ms"]
        print(
            f"\nstore RTT {rtt} ms (relay delay {float(rtt) / 2:g} ms each way; idle PING through "
            f"it: median {ping['median']} ms, min {ping['min']} ms)"
        )
        rows = [
            [
                name,
                _fmt(s["rps"], ",.0f"),
                _fmt(s["p50_ms"], ".2f"),
                _fmt(s["p99_ms"], ".2f"),
                _fmt(s.get("ratio_to_bare"), ".3f"),
                _fmt(s.get("paired_ratio_to_bare"), ".3f"),
                _fmt(s["app_cpu_us_per_request"], ".0f"),
                _fmt(s["app_cpu_cores"], ".2f"),
                _fmt(s.get("app_sleeps_per_request"), ".2f"),
                _fmt(s["relay_cpu_cores"], ".2f"),
                _fmt(s["load_cores_busy"], ".2f"),
                _fmt(s["per_request"].get("redis_round_trips"), ".2f"),
                _fmt(s["per_request"].get("redis_commands"), ".2f"),
                _fmt(s["per_request"].get("memcached_gets"), ".2f"),
                str(s["errors"]),
                str(s["unchecked_200"]) if name in _LIMITED else "-",
            ]
            for name, s in step["routes"].items()
        ]
        print(_table(headers, rows, lambda i: i > 0))
    print(
        "(app us/req: CPU of every process of the app on every host per request; app cores: "
        "their CPU over the run, at most the server cores; sleeps/req: times an app "
        "process waited with nothing to run (voluntary context switches) per request; "
        "load busy: share of the load "
        "cores used (near 1.00: wrk, relays and stores ran out of CPU); redis trips: "
        "client-to-server chunks through the Redis relays; unchecked: 200s without a "
        "RateLimit header, i.e. failed open)"
    )
    if report["exactness"]:
        print("\nexactness across hosts (one client address, every host, one limit):")
        rows = [
            [
                rtt,
                str(e["clients"]),
                str(e["requests"]),
                str(e["admitted"]),
                str(e["allowed"]),
                str(e["over_limit"]),
                str(e["unchecked_200"]),
                str(e["over_limit_checked"]),
                " ".join(f"{k}:{v}" for k, v in e["statuses"].items()),
            ]
            for rtt, e in report["exactness"].items()
        ]
        hdr = ["rtt ms", "clients", "requests", "admitted", "allowed", "over", "unchecked",
               "over by the store", "statuses"]  # fmt: skip
        print(_table(hdr, rows, lambda i: 0 < i < 8))
        print(
            "(unchecked: admitted without a RateLimit header, because a store call failed or "
            "outlasted STORE_TIMEOUT and the guards failed open; over by the store: admitted "
            "with one beyond the limit, a counting error across hosts)"
        )
    growth = report.get("growth")
    if growth:
        print(
            f"\ngrowth: {growth['route']}, distinct clients in X-Forwarded-For (key e.g. "
            f"{growth['key_example']!r})"
        )
        rows = [
            [
                f"{g['clients']:,}",
                _fmt(g["summary"]["rps"], ",.0f"),
                _fmt(g["summary"]["paired_ratio_to_bare"], ".3f"),
                _fmt(g["summary"]["app_cpu_us_per_request"], ".0f"),
                _fmt(g["summary"]["p99_ms"], ".2f"),
                _fmt(g["summary"]["per_request"].get("redis_commands"), ".2f"),
                f"{g['redis_used_memory'] / 1e6:.1f}",
                f"{g['redis_keys']:,}",
                _fmt(g["bytes_per_client"], ".0f"),
            ]
            for g in growth["steps"]
        ]
        hdr = ["clients", "req/s", "paired", "app us/req", "p99 ms", "redis cmds/req",
               "used MB", "keys", "bytes/client"]  # fmt: skip
        print(_table(hdr, rows, lambda i: True))
    if report["failover"]:
        print("\nfailover: a primary's host dies under load (see bench/cluster/failover.py)")
        print(
            "(seconds from the death: promoted, a replica took over; 95% enforced, from then "
            "on under 5% of answers in any quarter second were unchecked; all enforced, the "
            "last unchecked answer or probe admitted)"
        )
        rows = [
            [
                kind,
                _fmt(f["promoted_after_s"], ".2f"),
                _fmt(f["mostly_enforced_after_s"], ".2f"),
                _fmt(f["enforced_again_after_s"], ".2f")
                + ("" if f["restored_within_run"] else " (not within the run)"),
                str(f["server_errors_5xx"]),
                str(f["connection_errors"]),
                str(f["unchecked_200_after_kill"]),
                str(f["over_limit"]),
                str(f["lost_charges"]),
                str(f["requests"]),
            ]
            for kind, f in report["failover"].items()
        ]
        hdr = ["store", "promoted s", "95% enforced s", "all enforced s", "5xx", "conn err",
               "unchecked", "over limit", "lost charges", "requests"]  # fmt: skip
        print(_table(hdr, rows, lambda i: i > 0))
    if report["targets"]:
        print("\ntargets (issue 16):")
        for t in report["targets"]:
            extra = f" ({t['why']})" if t.get("why") else ""
            if t.get("medians") is not None:
                extra += f" (medians {t['medians']}, paired {t['paired']})"
            print(f"  [{'ok' if t['ok'] else 'MISS'}] {t['target']}: {t['value']}{extra}")
    busy = [
        (rtt, name, s["foreign_cpu_cores_max"])
        for rtt, step in report["sweep"].items()
        for name, s in step["routes"].items()
        if s["foreign_cpu_cores_max"] >= _BUSY_CORES
    ]
    if busy:
        worst = max(b[2] for b in busy)
        print(
            f"\nWARNING: other processes used up to {worst:.2f} of a core during {len(busy)} "
            "runs: the machine was not quiet; rerun when it is."
        )
    for name, reason in report["meta"].get("skipped", {}).items():
        print(f"skipped {name}: {reason}")
    for note in report["notes"]:
        print(f"note: {note}")
    for app, found in report["server_logs"].items():
        print(
            f"server log {app}: {found['tracebacks']} tracebacks, {found['error_lines']} error "
            f"lines, {found['other_lines']} other lines ({found['log']})"
        )
        for sample in found["samples"]:
            print(f"    {sample}")
    for route, result in report.get("profiles", {}).items():
        if "error" in result:
            print(f"profile {route}: {result['error']}")
            continue
        print(
            f"\nprofile {route} at 1 ms ({result['samples']} busy samples on {result['host']}, "
            f"stacks {result['stacks']}):"
        )
        for title, key in (("inclusive", "inclusive"), ("quart_api", "ours"), ("self", "self")):
            print(f"  top by {title}:")
            for entry in result[key][:8]:
                print(f"    {entry['share']:6.1%}  {entry['frame']}")
    print_readme_rows(report)
    print(f"\nresults: {json_path}" + (f", chart: {chart}" if chart else " (no chart)"))
    print(f"elapsed: {meta.get('elapsed_s')} s")


def print_readme_rows(report: dict[str, Any]) -> None:
    """The figures of README.md's "Several hosts" section, as the rows to paste there."""
    sweep, failover, growth = report["sweep"], report["failover"], report.get("growth")
    if not (sweep or failover or growth):
        return
    print('\nREADME.md, section "Several hosts" (paired ratios; from this run):')
    if failover:
        kinds = [k for k in ("cluster", "sentinel") if k in failover]
        rows = (
            ("5xx", lambda f: str(f["server_errors_5xx"])),
            ("replica promoted after", lambda f: f"{_fmt(f['promoted_after_s'], '.1f')} s"),
            (
                "limits enforced again (95% / all) after",
                lambda f: (
                    f"{_fmt(f['mostly_enforced_after_s'], '.1f')} s / "
                    + f"{_fmt(f['enforced_again_after_s'], '.1f')} s"
                    + ("" if f["restored_within_run"] else " (not within the run)")
                ),
            ),
            ("requests admitted over the limit meanwhile", lambda f: str(f["over_limit"])),
            (
                "lost charges (replica missed acknowledged writes)",
                lambda f: str(f["lost_charges"]),
            ),
        )
        print(
            "| | "
            + " | ".join({"cluster": "Redis Cluster", "sentinel": "Sentinel"}[k] for k in kinds)
            + " |"
        )
        for label, cell in rows:
            print(f"| {label} | " + " | ".join(cell(failover[k]) for k in kinds) + " |")
    for rtt, step in sweep.items():
        routes = step["routes"]

        def ratio(name: str, routes: dict[str, Any] = routes) -> str:
            return _fmt(routes.get(name, {}).get("paired_ratio_to_bare"), ".2f")

        both = _both(routes, "full-stack", "seed")
        trips = "{} / {}".format(
            _fmt(
                routes.get("rate_limited", {}).get("per_request", {}).get("redis_round_trips"),
                ".2f",
            ),
            _fmt(routes.get("seed", {}).get("per_request", {}).get("redis_round_trips"), ".2f"),
        )
        print(
            f"| {rtt} ms | {ratio('rate_limited')} | {ratio('cached')} | {ratio('full-stack')} | "
            f"{_fmt(both[1] if both else None, '.2f')} | {trips} |"
        )
    if growth and growth["steps"]:
        first, last = growth["steps"][0], growth["steps"][-1]
        cpu = [_fmt(g["summary"]["app_cpu_us_per_request"], ".0f") for g in (first, last)]
        print(
            f"growth: {last['bytes_per_client']:.0f} bytes per client at {last['clients']:,}; "
            f"app CPU per request {cpu[0]} us at {first['clients']:,} clients, {cpu[1]} us at "
            f"{last['clients']:,}"
        )
