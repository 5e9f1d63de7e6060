"""`autellix bench --concurrency N1,N2,...`: closed-loop agent fleets on real engines, the counterpart of
`autellix sim --concurrency` (sim/sweep.py) with the same steady-state figures (metrics.closed_loop).

Every point draws `programs` + N programs of the workload (seeded; the same programs for every target and
every repeat), keeps N in flight and stops at the `programs`-th completion. Fairness as in sweep.py:
targets run one at a time, interleaved point by point in alternating order, each run with its own cache
salt and program-id tag. Each *program* has its own cache salt too: workloads such as `coding` replay a
few real sessions many times, and with temperature 0 two replays of one session are byte-identical, so
without it they would share their whole histories in the prefix cache (SWE-bench tasks share at most a
system prompt); the simulator shares nothing across programs either. Each point runs `repeats` times;
the table shows the mean and the JSON keeps every run, so the spread is visible (`runs`). Beside the
client's figures each row carries the engine's own prefix-cache counters over the run
(`engine_hit_share`: vLLM's `prefix_cache_hits / queries`, which also counts preempted calls' re-lookups)
and the hit share the engine reported per call (`prefix_hit_share`:
`usage.prompt_tokens_details.cached_tokens` / prompt tokens, in the window).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from autellix.bench.calibration_file import kv_capacity_from_metrics
from autellix.bench.driver import ReplayOptions, RunResult, replay_closed
from autellix.bench.plan import BenchOutput, BenchPlan, run_order
from autellix.bench.sweep import engine_rates, prompt_builders
from autellix.bench.targets import engine_counters
from autellix.metrics import closed_loop
from autellix.report import fleet_ratios
from autellix.workloads import generate, parse_counts

AVERAGED = ("programs_per_hour", "calls_per_min", "mean_jct", "p95_jct", "prefix_hit_share",
            "engine_hit_share", "preemptions_per_call")


@dataclass(frozen=True)
class FleetPlan:
    """A closed-loop real sweep: `programs` completions per point, each point `repeats` times."""

    bench: BenchPlan
    concurrency: list[int]
    programs: int
    repeats: int = 2


def fleet_row(run: RunResult, programs: int, counters: dict[str, float]) -> dict[str, Any]:
    """One run's row: metrics.closed_loop over its completed programs, plus failures and the engine's
    own counters (deltas over the run)."""
    ok = [p for p in run.programs if p.ok]
    row: dict[str, Any] = {"policy": run.target, "concurrency": run.concurrency, "programs": programs,
                           "completed_programs": len(ok),
                           "failed_calls": sum(1 for c in run.calls if c.error),
                           "wall_s": run.wall_s, "aborted": run.aborted}
    if len(ok) >= 2:
        row.update(closed_loop(ok, [c for c in run.calls if not c.error]))
    row["preemptions_per_call"], row["engine_hit_share"] = engine_rates(counters, len(run.calls))
    return row


def mean_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (policy, concurrency): the mean of each figure over the repeats, with its min and max
    (`<figure>_min` / `_max`) for the spread."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["policy"], r["concurrency"]), []).append(r)
    out = []
    for (policy, c), rows in groups.items():
        row: dict[str, Any] = {"policy": policy, "concurrency": c, "repeats": len(rows),
                               "programs": rows[0]["programs"]}
        for key in AVERAGED:
            values = np.array([r.get(key, math.nan) for r in rows], dtype=float)
            ok = values[np.isfinite(values)]
            row[key] = float(ok.mean()) if ok.size else math.nan
            row[f"{key}_min"] = float(ok.min()) if ok.size else math.nan
            row[f"{key}_max"] = float(ok.max()) if ok.size else math.nan
        row["wall_s"] = sum(r["wall_s"] for r in rows)
        out.append(row)
    return out


async def run_fleet_bench(plan: FleetPlan, progress: bool = True) -> tuple[BenchOutput, dict[str, Any]]:
    """Run every (concurrency, repeat, target) point; never raises for a failing target."""
    b = plan.bench
    out = BenchOutput(b)
    runs: list[dict[str, Any]] = []
    capacity: dict[str, int | None] = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=b.timeout) as client:
        builders = await prompt_builders(client, b, out)
        lens = [i.max_model_len for i in out.targets.values() if i.max_model_len]
        for t in b.targets:
            answering = not out.targets[t.name].error
            with_metrics = await client.get(f"{t.base_url}/metrics") if answering else None
            capacity[t.name] = kv_capacity_from_metrics(with_metrics.text) if with_metrics else None
        total = len(plan.concurrency) * plan.repeats * len(b.targets) * plan.programs
        bar = tqdm(total=total, unit="prog", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        point = 0
        for c in plan.concurrency:
            programs = generate(b.workload, plan.programs + c, 1.0, b.seed, b.scale)
            for rep in range(plan.repeats):
                for target in run_order(b.targets, point):
                    point += 1
                    bar.set_postfix_str(f"{target.name} N={c} #{rep + 1}")
                    info = out.targets[target.name]
                    tag = f"{target.name}-c{c}-{rep}-{uuid.uuid4().hex[:8]}"
                    opts = ReplayOptions(model=b.model or info.model or "", run_tag=tag, timeout=b.timeout,
                                         max_model_len=min(lens) if lens else None,
                                         cache_salt=tag if b.cache_salt else None, salt_per_program=True,
                                         send_identity=b.send_identity)
                    before = await engine_counters(client, target)
                    done = 0

                    def tick(rec: Any) -> None:
                        nonlocal done
                        if rec.ok and done < plan.programs:
                            done += 1
                            bar.update(1)

                    run = await replay_closed(client, target, programs, c, plan.programs,
                                              builders[target.name], opts, on_program_done=tick)
                    after = await engine_counters(client, target)
                    bar.update(plan.programs - done)
                    out.runs.append(run)
                    deltas = {k: after[k] - before[k] for k in after if k in before}
                    row = fleet_row(run, plan.programs, deltas)
                    row["repeat"] = rep
                    runs.append(row)
                    bar.write(f"bench: {target.name} N={c} #{rep + 1}: "
                              f"{row.get('calls_per_min', math.nan):.1f} calls/min, "
                              f"{row.get('programs_per_hour', math.nan):.1f} programs/h, prefix hits "
                              f"{row.get('prefix_hit_share', math.nan):.0%}", file=sys.stderr)
                    if b.cooldown > 0:
                        await asyncio.sleep(b.cooldown)
        bar.close()
    rows = mean_rows(runs)
    names = [t.name for t in b.targets]
    rows.sort(key=lambda r: (r["concurrency"], names.index(r["policy"])))
    peak = _peak_history(b)
    fit = {n: cap / peak for n, cap in capacity.items() if cap}
    config = {"workload": b.workload, "scale": b.scale, "seed": b.seed, "concurrency": plan.concurrency,
              "programs": plan.programs, "repeats": plan.repeats, "kv_capacity_tokens": capacity,
              "mean_peak_history_tokens": peak,
              "working_set_fit": min(fit.values()) if fit else math.nan}
    payload = {"config": config, "results": rows, "runs": runs,
               "comparisons": [c for m in ("calls_per_min", "programs_per_hour")
                               for c in fleet_ratios(rows, (names[0],), m)]}
    return out, payload


def _peak_history(plan: BenchPlan) -> float:
    """Mean full history (last call's prompt + output) of the workload's programs, in tokens."""
    programs = generate(plan.workload, 200, 1.0, plan.seed, plan.scale)
    return sum(p.calls[-1].prompt_tokens + p.calls[-1].output_tokens for p in programs) / len(programs)



FLEET_BENCH_COLUMNS = ("policy", "concurrency", "repeats", "calls_per_min", "calls_per_min_min",
                       "calls_per_min_max", "programs_per_hour", "mean_jct", "p95_jct", "prefix_hit_share",
                       "engine_hit_share", "preemptions_per_call", "wall_s")


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


def run_fleet_command(args: argparse.Namespace) -> int:
    """`autellix bench --concurrency`: run, print the table and ratios, write JSON (and the plot); exit
    status 1 when some point completed fewer than two programs (no steady state to report)."""
    from autellix.bench.plan import plan_from_args
    from autellix.report import format_fleet, write_json

    if args.repeats < 1:
        raise ValueError(f"--repeats: need >= 1, got {args.repeats}")
    n = parse_counts(args.programs)
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"--programs: a closed loop needs one completion count >= 2, got {args.programs!r}")
    args.rates = [1.0]  # the open-loop plan's rate is unused here
    plan = FleetPlan(plan_from_args(args), sorted(set(args.concurrency)), n, args.repeats)
    out, payload = asyncio.run(run_fleet_bench(plan))
    payload["targets"] = [{"name": t.name, "url": t.base_url, "model": out.targets[t.name].model,
                           "tokenizer": out.tokenizers.get(t.name)} for t in plan.bench.targets]
    payload["program_records"] = [p.to_json() | {"concurrency": run.concurrency}
                                  for run in out.runs for p in run.programs]
    payload["calls"] = [c.to_json() | {"concurrency": run.concurrency} for run in out.runs for c in run.calls]
    print(f"workload {plan.bench.workload}, scale {plan.bench.scale:g}, seed {plan.bench.seed}: "
          f"{plan.programs} "
          f"completions per point (20% warm-up), {plan.repeats} repeats, interleaved")
    print(format_fleet(payload, FLEET_BENCH_COLUMNS))
    write_json(args.json, payload)
    if args.plot:
        plot_fleet_bench(payload, args.plot)
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return 0 if all(r["completed_programs"] >= 2 for r in payload["runs"]) else 1
