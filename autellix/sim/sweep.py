"""Simulated sweeps: `autellix sim --workload W --rates ...` (open loop) and `--concurrency ...` (closed
loop, an agent fleet), each a JSON payload: `config`, one row per point, comparisons, wall seconds.

Open loop: every rate's programs are drawn once (the same programs for every policy, arrival times
scaled by 1/rate across rates); the comparisons are throughput at equal latency against the baselines.
Closed loop: an agent fleet (an SWE-bench evaluation, RL rollouts, a company's coding agents) keeps N
programs in flight and starts the next when one ends, so its load is its concurrency, not an arrival
rate; the comparisons are programs per hour against each baseline at equal concurrency. Either way the
policies are interleaved point by point (points.py runs them).
"""

from __future__ import annotations

import time
from typing import Any

from autellix.report import compare, fleet_ratios
from autellix.sim.cost import CostModel
from autellix.sim.points import Point, run_points
from autellix.sim.spec import SweepSpec, cost_model, describe, draw_programs


def run_sweep(spec: SweepSpec, progress: bool = True, jobs: int = 1) -> dict[str, Any]:
    """Run every (rate, policy) point, policies interleaved per rate; return the JSON payload."""
    spec.validate()
    cost, cpu_blocks = cost_model(spec)
    started = time.perf_counter()
    points = [Point(p, rate=rate) for rate in spec.rates for p in spec.policies]
    rows = run_points(spec, points, cost, cpu_blocks, f"sim {spec.workload}", progress, jobs)
    comparisons = []
    for stable in (False, True):  # the run as measured, then only its steady-state points
        for baseline in spec.baselines:
            comparisons += compare(rows, baseline, multiples=spec.multiples, stable=stable)
    return {"config": describe(spec, cost), "results": rows, "comparisons": comparisons,
            "wall_s": time.perf_counter() - started}


def run_fleet(spec: SweepSpec, concurrency: tuple[int, ...], progress: bool = True,
              jobs: int = 1) -> dict[str, Any]:
    """Every (concurrency, policy) point, policies interleaved; the JSON payload."""
    if not concurrency or any(c < 1 for c in concurrency):
        raise ValueError(f"--concurrency: need one or more counts >= 1, got {list(concurrency)}")
    spec.validate(need_rates=False)
    cost, cpu_blocks = cost_model(spec)
    started = time.perf_counter()
    points = [Point(p, concurrency=c) for c in concurrency for p in spec.policies]
    rows = run_points(spec, points, cost, cpu_blocks, f"fleet {spec.workload}", progress, jobs)
    config = describe(spec, cost)
    config["concurrency"] = list(concurrency)
    config["working_set_fit"] = working_set_fit(spec, cost)
    return {"config": config, "results": rows, "comparisons": fleet_ratios(rows, spec.baselines),
            "wall_s": time.perf_counter() - started}


def working_set_fit(spec: SweepSpec, cost: CostModel) -> float:
    """How many of the workload's programs fit in the KV cache at once, each at its peak history (its
    largest call's prompt + output: the last call's, or a blocking subagent's that ends above it): the
    fleet size at 1x the cache's residency."""
    programs = draw_programs(spec.workload, 200, 200, 1.0, spec.seed, spec.scale)
    peak = sum(max(c.prompt_tokens + c.output_tokens for c in p.calls) for p in programs) / len(programs)
    blocks = spec.config.gpu_blocks or cost.kv_capacity_blocks
    return blocks * cost.block_tokens / peak
