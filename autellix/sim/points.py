"""The point runner shared by open-loop (rates) and closed-loop (concurrency) sweeps.

A point is one policy at one arrival rate or one concurrency. Open loop: the rate's program count is a
prefix of one draw of the sweep's largest count, arriving at that rate (workloads.generate). Closed loop
(`programs` completions): `programs` + N programs of one draw, N in flight from time 0, the run stopping at
the `programs`-th completion; its figures are the steady state after the warm-up (metrics.closed_loop).
Either way the row ends with the run's end time, wall-clock seconds, events and engine counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from autellix.metrics import closed_loop, mixed_closed_loop
from autellix.sim.cluster import simulate
from autellix.sim.cost import CostModel
from autellix.sim.spec import SweepSpec, draw_programs, interactive_stream
from autellix.workloads import program_counts


@dataclass(frozen=True, slots=True)
class Point:
    """One policy at one arrival rate (open loop) or at one concurrency (closed loop): exactly one set."""

    policy: str
    rate: float | None = None
    concurrency: int | None = None

    @property
    def label(self) -> str:
        if self.concurrency is None:
            return f"{self.policy}@{self.rate:g}"
        return f"{self.policy} N={self.concurrency}"


def run_point(spec: SweepSpec, point: Point, cost: CostModel, cpu_blocks: int) -> dict[str, Any]:
    """Simulate one point (its rate one of spec.rates); return its result row."""
    c = point.concurrency
    if c is None:
        counts = program_counts(spec.programs, len(spec.rates))
        n = counts[spec.rates.index(point.rate)]
        programs = draw_programs(spec.workload, n, max(counts), point.rate, spec.seed, spec.scale)
    else:
        n = spec.programs if isinstance(spec.programs, int) else max(spec.programs)
        programs = draw_programs(spec.workload, n + c, n + c, 1.0, spec.seed, spec.scale)
    stream = interactive_stream(spec) if spec.interactive else ()
    res = simulate(programs, point.policy, cost, spec.engines, spec.balancer, spec.config, spec.policy_config,
                   cpu_blocks, concurrency=c, stop_after=None if c is None or stream else n,
                   interactive=stream)
    if stream:
        row = {"policy": point.policy, "concurrency": c, "balancer": spec.balancer, "engines": spec.engines,
               **mixed_closed_loop(res.programs, res.calls)}
    elif c is None:
        row = {"policy": point.policy, "balancer": spec.balancer, "engines": spec.engines, "rate": point.rate,
               "programs": len(programs), "calls": len(res.calls), "swap": spec.config.swap,
               "kv_offload": spec.config.kv_offload, "max_num_seqs": spec.config.max_num_seqs,
               "prefill_weight": spec.policy_config.prefill_weight, **res.summary().as_dict()}
    else:
        row = {"policy": point.policy, "concurrency": c, "balancer": spec.balancer, "engines": spec.engines,
               "programs": n, **closed_loop(res.programs, res.calls)}
    return {**row, "sim_end_s": res.end, "wall_s": res.wall_s, "events": res.events,
            **res.totals().as_dict()}


def _task(args: tuple[SweepSpec, Point, CostModel, int]) -> dict[str, Any]:
    return run_point(*args)


def run_points(spec: SweepSpec, points: Sequence[Point], cost: CostModel, cpu_blocks: int, desc: str,
               progress: bool = True, jobs: int = 1) -> list[dict[str, Any]]:
    """Every point in order (in `jobs` worker processes when > 1); their rows, in the same order."""
    from tqdm import tqdm

    tasks = [(spec, p, cost, cpu_blocks) for p in points]
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(tasks), desc=desc, unit="point", disable=not progress) as bar:
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                for row in pool.map(_task, tasks):
                    rows.append(row)
                    bar.update()
        else:
            for task in tasks:
                bar.set_postfix_str(task[1].label)
                rows.append(_task(task))
                bar.update()
    return rows
