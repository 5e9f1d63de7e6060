"""What `autellix bench --concurrency` reports (fleet.py runs it): one row per run, the mean over a point's
repeats with the spread, the printed columns and the plot.

A run's row: a closed-loop fleet's steady state (`fleet_row`: metrics.closed_loop) or, with an
interactive stream beside the fleet, each class's figures (`mixed_row`: metrics.mixed_closed_loop, the
batch fleet's over the stream's span and the interactive programs' own), both with the run's failures
and the engine's own counters (deltas over the run). Figures cover completed programs and successful
calls only; a row whose runs had too few completions to measure lacks them (NaN in the table).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autellix.bench.driver import RunResult
from autellix.bench.sweep import engine_rates
from autellix.metrics import closed_loop, mixed_closed_loop

AVERAGED = ("programs_per_hour", "calls_per_min", "mean_jct", "p95_jct", "prefix_hit_share",
            "engine_hit_share", "preemptions_per_call")
MIXED_AVERAGED = AVERAGED + ("interactive_programs", "interactive_failed", "interactive_jct_mean",
                             "interactive_jct_p95", "interactive_ttft_mean", "interactive_ttft_p95")
"""A mixed point's averaged figures: the batch fleet's (AVERAGED) and the interactive stream's."""

FLEET_BENCH_COLUMNS = ("policy", "concurrency", "repeats", "calls_per_min", "calls_per_min_min",
                       "calls_per_min_max", "programs_per_hour", "mean_jct", "p95_jct", "prefix_hit_share",
                       "engine_hit_share", "preemptions_per_call", "wall_s")
MIXED_BENCH_COLUMNS = ("policy", "concurrency", "repeats", "programs_per_hour", "p95_jct",
                       "interactive_programs", "interactive_failed", "interactive_jct_mean",
                       "interactive_jct_p95", "interactive_ttft_p95", "prefix_hit_share", "wall_s")
"""Batch throughput and completion time beside the interactive programs' (autellix sim's MIXED_COLUMNS)."""


def _run_row(run: RunResult, programs: int, counters: dict[str, float]) -> dict[str, Any]:
    """What every run's row carries: its point, completions, failed calls, wall time, why it was aborted
    (None) and the engine's preemptions and prefix-cache hit share over the run."""
    row: dict[str, Any] = {"policy": run.target, "concurrency": run.concurrency, "programs": programs,
                           "completed_programs": sum(p.ok for p in run.programs),
                           "failed_calls": sum(1 for c in run.calls if c.error),
                           "wall_s": run.wall_s, "aborted": run.aborted}
    row["preemptions_per_call"], row["engine_hit_share"] = engine_rates(counters, len(run.calls))
    return row


def fleet_row(run: RunResult, programs: int, counters: dict[str, float]) -> dict[str, Any]:
    """One closed-loop run's row: metrics.closed_loop over its completed programs (when two or more)."""
    row = _run_row(run, programs, counters)
    ok = [p for p in run.programs if p.ok]
    if len(ok) >= 2:
        row.update(closed_loop(ok, [c for c in run.calls if not c.error]))
    return row


def mixed_row(run: RunResult, programs: int, counters: dict[str, float]) -> dict[str, Any]:
    """One mixed run's row: metrics.mixed_closed_loop over its completed programs, and
    `interactive_failed`, the interactive programs that did not complete. No figures when no interactive
    program, or fewer than two batch ones during the stream, completed."""
    row = _run_row(run, programs, counters)
    row["interactive_failed"] = sum(not p.ok for p in run.programs if not p.batch)
    ok, calls = [p for p in run.programs if p.ok], [c for c in run.calls if not c.error]
    try:
        row.update(mixed_closed_loop(ok, calls))
    except ValueError:  # too few completions to measure (metrics.mixed_closed_loop and closed_loop say so)
        pass
    return row


def mean_rows(runs: list[dict[str, Any]], keys: tuple[str, ...] = AVERAGED) -> list[dict[str, Any]]:
    """One row per (policy, concurrency): the mean of each figure in `keys` over the repeats, with its min
    and max (`<figure>_min` / `_max`) for the spread."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["policy"], r["concurrency"]), []).append(r)
    out = []
    for (policy, c), rows in groups.items():
        row: dict[str, Any] = {"policy": policy, "concurrency": c, "repeats": len(rows),
                               "programs": rows[0]["programs"]}
        for key in keys:
            values = np.array([r.get(key, math.nan) for r in rows], dtype=float)
            ok = values[np.isfinite(values)]
            row[key] = float(ok.mean()) if ok.size else math.nan
            row[f"{key}_min"] = float(ok.min()) if ok.size else math.nan
            row[f"{key}_max"] = float(ok.max()) if ok.size else math.nan
        row["wall_s"] = sum(r["wall_s"] for r in rows)
        out.append(row)
    return out


def plot_fleet_bench(payload: dict[str, Any], out: str) -> None:
    """Calls per minute (mean, bars from the slowest to the fastest repeat) and prefix-cache hit share
    against concurrency, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autellix.report import series

    fit = payload["config"]["working_set_fit"]
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0))
    for name, group in series(payload["results"], x="concurrency").items():
        xs = [r["concurrency"] for r in group]
        ys = [r["calls_per_min"] for r in group]
        err = [[y - r["calls_per_min_min"] for y, r in zip(ys, group)],
               [r["calls_per_min_max"] - y for y, r in zip(ys, group)]]
        axes[0].errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, label=name)
        axes[1].plot(xs, [r["prefix_hit_share"] for r in group], marker="o", ms=4, label=name)
    for ax, label in zip(axes, ("calls per minute", "prompt tokens served from the prefix cache")):
        if math.isfinite(fit):
            ax.axvline(fit, color="gray", ls="--", lw=1, label="1x: full histories fit")
        ax.set_xlabel("programs in flight (concurrency)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(0, 1)
    fig.suptitle(f"closed-loop {payload['config']['workload']} fleet on real engines")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
