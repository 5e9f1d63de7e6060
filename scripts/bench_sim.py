#!/usr/bin/env python3
"""Simulator speed benchmark (not a timed test): prints seconds per sweep point against the targets.

Targets (issue 3): one sweep point of 1,000 chat programs in <= 20 s, 10,000 mixed programs in <= 3 min,
on this 2-core machine. A point = generate the workload once + simulate one policy on it. Rates sit at
the FCFS knee of the default H200 / Llama-3.1-8B engine (the busiest regime that is still realistic).

    .venv/bin/python scripts/bench_sim.py            # both targets, fcfs and autellix
    .venv/bin/python scripts/bench_sim.py --quick    # 1,000 chat + 2,000 mixed
"""

from __future__ import annotations

import argparse
import time

from autellix.sim.cluster import simulate
from autellix.sim.config import EngineConfig
from autellix.sim.spec import SweepSpec, cost_model
from autellix.workloads import generate

POINTS = (("chat", 1000, 3.0, 20.0), ("mixed", 10_000, 3.0, 180.0))


def bench(workload: str, n: int, rate: float, policy: str,
          fast_forward: bool = True) -> tuple[float, float, int]:
    """(generate seconds, simulate seconds, events) of one point."""
    cost, cpu_blocks = cost_model(SweepSpec(workload, (policy,), (rate,)))
    t0 = time.perf_counter()
    programs = generate(workload, n, rate, 0)
    t1 = time.perf_counter()
    res = simulate(programs, policy, cost, config=EngineConfig(fast_forward=fast_forward),
                   cpu_blocks=cpu_blocks)
    return t1 - t0, time.perf_counter() - t1, res.events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 mixed programs instead of 10,000")
    ap.add_argument("--policies", default="fcfs,autellix")
    args = ap.parse_args()
    print(f"{'workload':>8} {'programs':>8} {'rate':>5} {'policy':>10} {'generate_s':>10} {'simulate_s':>10} "
          f"{'total_s':>8} {'target_s':>8}  events")
    for workload, n, rate, target in POINTS:
        if args.quick and workload == "mixed":
            n, target = 2000, target / 5
        for policy in args.policies.split(","):
            gen, sim, events = bench(workload, n, rate, policy)
            ok = "ok" if gen + sim <= target else "SLOW"
            print(f"{workload:>8} {n:>8} {rate:>5g} {policy:>10} {gen:>10.1f} {sim:>10.1f} {gen + sim:>8.1f} "
                  f"{target:>8.0f}  {events} {ok}", flush=True)
    gen, sim, events = bench("chat", 200, 3.0, "autellix", fast_forward=False)
    _, fast, fevents = bench("chat", 200, 3.0, "autellix")
    print(f"\nfast-forward on 200 chat programs: {fast:.2f} s ({fevents} events) vs step-by-step "
          f"{sim:.2f} s ({events} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
