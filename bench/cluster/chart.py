"""``make cluster-bench``'s chart: ratio to bare, requests/s and p99 against RTT, failover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_chart"]


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Ratio to bare and p99 against RTT per route, req/s of full stack vs seed, failover."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sweep = report["sweep"]
    if not sweep:
        return None
    rtts = sorted(sweep, key=float)
    names = list(dict.fromkeys(n for r in rtts for n in sweep[r]["routes"]))
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ratio_ax, rps_ax), (p99_ax, fail_ax) = axes
    x = [float(r) for r in rtts]
    for name in names:
        series = [sweep[r]["routes"].get(name, {}) for r in rtts]
        ratio_ax.plot(x, [s.get("paired_ratio_to_bare") for s in series], marker="o", label=name)
        p99_ax.plot(x, [s.get("p99_ms") for s in series], marker="o", label=name)
        rps_ax.plot(x, [s.get("rps") for s in series], marker="o", label=name)
    ratio_ax.axhline(0.85, color="#999", linestyle=":", linewidth=1)
    ratio_ax.axhline(0.90, color="#999", linestyle="--", linewidth=1)
    ratio_ax.set(xlabel="store RTT, ms", ylabel="requests/s, paired ratio to bare",
                 title="ratio to bare at the same RTT")  # fmt: skip
    rps_ax.set(xlabel="store RTT, ms", ylabel="requests/s (median)", title="throughput")
    p99_ax.set(xlabel="store RTT, ms", ylabel="p99 ms (median)", title="p99 latency")
    p99_ax.set_yscale("log")
    for ax in (ratio_ax, rps_ax, p99_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    failover = report["failover"]
    if failover:
        for kind, result in failover.items():
            timeline = result["timeline"]
            t = [float(k) - result["killed_at_s"] for k in timeline]
            width = result["timeline_bucket_s"]
            unchecked = [v.get("200-unchecked", 0) / width for v in timeline.values()]
            admitted = [
                (v.get("200", 0) + v.get("200-unchecked", 0)) / width for v in timeline.values()
            ]
            fail_ax.plot(t, admitted, label=f"{kind}: 200/s")
            fail_ax.plot(t, unchecked, linestyle="--", label=f"{kind}: unchecked 200/s")
        fail_ax.axvline(0, color="red", linewidth=1)
        fail_ax.set(xlabel="seconds from the primary's death", ylabel="responses/s",
                    title="failover: admitted requests (writers + probes)")  # fmt: skip
        fail_ax.legend(fontsize=7)
        fail_ax.grid(alpha=0.3)
    else:
        fail_ax.set_axis_off()
    meta = report["meta"]
    fig.suptitle(
        f"quart-api cluster-bench @ {meta['commit']}: {len(meta['app_hosts'])} hosts x "
        f"{meta['workers_per_host']} workers, {meta['connections']} connections",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
