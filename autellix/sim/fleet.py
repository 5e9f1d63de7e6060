"""`autellix sim --workload W --concurrency N1,N2,...`: closed-loop agent fleets, simulated.

An agent fleet (an SWE-bench evaluation, RL rollouts, a company's coding agents) keeps N programs in
flight and starts the next when one ends, so its load is its concurrency, not an arrival rate. Every
point draws `programs` + N programs of the workload (seeded; the same draw's prefix for every policy),
starts N at once and stops at the `programs`-th completion; the steady-state figures come from the
completions after the warm-up (metrics.closed_loop). Policies are interleaved point by point.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from autellix.metrics import closed_loop
from autellix.report import Row, format_table, series
from autellix.sim.cluster import simulate
from autellix.sim.cost import CostModel
from autellix.sim.sweep import SweepSpec, _describe, _programs, cost_model

FLEET_COLUMNS = ("policy", "concurrency", "programs_per_hour", "calls_per_min", "mean_jct", "p95_jct",
                 "prefill_tokens", "new_prompt_tokens", "prefix_hit_share", "holds_granted",
                 "holds_expired", "holds_released_pressure", "programs_paused", "wall_s")


def working_set_fit(spec: SweepSpec, cost: CostModel) -> float:
    """How many of the workload's programs fit in the KV cache at once, each at its full history (its
    last call's prompt + output): the fleet size at 1x the cache's residency."""
    programs = _programs(spec.workload, 200, 200, 1.0, spec.seed, spec.scale)
    peak = sum(p.calls[-1].prompt_tokens + p.calls[-1].output_tokens for p in programs) / len(programs)
    blocks = spec.config.gpu_blocks or cost.kv_capacity_blocks
    return blocks * cost.block_tokens / peak


def run_fleet_point(spec: SweepSpec, concurrency: int, policy: str, cost: CostModel,
                    cpu_blocks: int) -> dict[str, Any]:
    n = spec.programs if isinstance(spec.programs, int) else max(spec.programs)
    programs = _programs(spec.workload, n + concurrency, n + concurrency, 1.0, spec.seed, spec.scale)
    res = simulate(programs, policy, cost, spec.engines, spec.balancer, spec.config, spec.policy_config,
                   cpu_blocks, concurrency=concurrency, stop_after=n)
    totals = res.totals()
    return {"policy": policy, "concurrency": concurrency, "balancer": spec.balancer,
            "engines": spec.engines, "programs": n, **closed_loop(res.programs, res.calls),
            "sim_end_s": res.end, "wall_s": res.wall_s, "events": res.events, **totals.as_dict()}


def _task(args: tuple[SweepSpec, int, str, CostModel, int]) -> dict[str, Any]:
    return run_fleet_point(*args)


def run_fleet(spec: SweepSpec, concurrency: tuple[int, ...], progress: bool = True,
              jobs: int = 1) -> dict[str, Any]:
    """Every (concurrency, policy) point, policies interleaved; the JSON payload."""
    from tqdm import tqdm

    if not concurrency or any(c < 1 for c in concurrency):
        raise ValueError(f"--concurrency: need one or more counts >= 1, got {list(concurrency)}")
    spec.validate(need_rates=False)
    cost, cpu_blocks = cost_model(spec)
    tasks = [(spec, c, p, cost, cpu_blocks) for c in concurrency for p in spec.policies]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(tasks), desc=f"fleet {spec.workload}", unit="point", disable=not progress) as bar:
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                for row in pool.map(_task, tasks):
                    rows.append(row)
                    bar.update()
        else:
            for task in tasks:
                rows.append(_task(task))
                bar.update()
    config = _describe(spec, cost)
    config["concurrency"] = list(concurrency)
    config["working_set_fit"] = working_set_fit(spec, cost)
    return {"config": config, "results": rows, "comparisons": fleet_ratios(rows, spec.baselines),
            "wall_s": time.perf_counter() - started}


def fleet_ratios(rows: list[Row], baselines: tuple[str, ...],
                 metric: str = "programs_per_hour") -> list[dict[str, Any]]:
    """`metric` of every policy over each baseline's, at each concurrency (each pair of baselines once:
    the later-listed one over the earlier)."""
    by = {(r["policy"], r["concurrency"]): r[metric] for r in rows}
    out = []
    for k, base in enumerate(baselines):
        for (policy, c), value in by.items():
            b = by.get((base, c))
            if policy not in baselines[:k + 1] and b:
                out.append({"system": policy, "baseline": base, "concurrency": c, "metric": metric,
                            "ratio": value / b})
    return out


def format_fleet(payload: dict[str, Any], columns: tuple[str, ...] = FLEET_COLUMNS) -> str:
    fit = payload["config"]["working_set_fit"]
    lines = [format_table(payload["results"], columns), "",
             f"programs whose full histories fit in the KV cache at once: {fit:.1f} (1x residency)", "ratios:"]
    for c in payload["comparisons"]:
        lines.append(f"{c['system']:>14} vs {c['baseline']:<14} at concurrency {c['concurrency']:>4} "
                     f"({c['concurrency'] / fit:.1f}x): {c['ratio']:.2f}x {c['metric'].replace('_', ' ')}")
    return "\n".join(lines)


def plot_fleet(rows: list[Row], out: str | Path, title: str = "", fit: float | None = None) -> None:
    """Programs per hour and mean program completion time against concurrency, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0))
    for name, group in series(rows, x="concurrency").items():
        xs = [r["concurrency"] for r in group]
        axes[0].plot(xs, [r["programs_per_hour"] for r in group], marker="o", ms=4, label=name)
        axes[1].plot(xs, [r["mean_jct"] for r in group], marker="o", ms=4, label=name)
    for ax, label in zip(axes, ("programs per hour", "mean program completion time (s)")):
        if fit:
            ax.axvline(fit, color="gray", ls="--", lw=1, label="1x: full histories fit")
        ax.set_xlabel("programs in flight (concurrency)")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(bottom=0)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
