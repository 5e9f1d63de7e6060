#!/usr/bin/env python3
"""How much does a sweep's headline ratio depend on which programs were drawn? Plan a real sweep here.

Runs the same simulated sweep once per seed and prints, per seed, the throughput-at-equal-latency ratio of
each system against the first baseline at each latency target, and the sweep's replay time (the sum of
its points' simulated durations: what `autellix bench` takes when it replays targets one at a time).
Takes every `autellix sim` sweep option, plus `--seeds`. Run it with the calibration of the engine you
are about to benchmark to learn, before spending an hour on it, whether a sweep that fits your time can
resolve the effect you expect. Example (the README's 30-minute real sweep):

    .venv/bin/python scripts/seed_spread.py --seeds 0-7 --workload mixed --policy fcfs,autellix \\
        --rates 0.1,0.3,0.9 --programs 20,30,80 --scale 0.1 \\
        --calibration docs/results/calibration_vllm_cpu.json --model SmolLM2-135M-Instruct \\
        --max-num-seqs 8 --max-batched-tokens 2048 --swap recompute --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics

from autellix.sim.cli import add_sweep_arguments, spec_from_args
from autellix.sim.sweep import run_sweep


def parse_seeds(text: str) -> list[int]:
    """'0-7' or '0,3,5' -> seeds."""
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-", 1))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", help="comma-separated policies (default fcfs,autellix)")
    parser.add_argument("--seeds", default="0-7", help="seeds, as 0-7 or 0,3,5 (default 0-7)")
    add_sweep_arguments(parser)
    args = parser.parse_args()
    spec = spec_from_args(args)
    seeds = parse_seeds(args.seeds)
    ratios: dict[tuple[str, float], list[float]] = {}
    print(f"{'seed':>4}  {'replay min':>10}  ratios vs {spec.baselines[0]} at each target "
          "('>=' / '<=': one side never crossed the target inside the sweep; '?': neither did)")
    for seed in seeds:
        payload = run_sweep(dataclasses.replace(spec, seed=seed), progress=not args.quiet, jobs=args.jobs)
        minutes = sum(r["sim_end_s"] for r in payload["results"]) / 60
        parts = []
        for c in payload["comparisons"]:
            if c["baseline"] != spec.baselines[0] or c.get("stable"):  # the measured run's ratios only
                continue
            if c["bound"] != "?":  # neither side crossed the target: the sweep says nothing about the ratio
                ratios.setdefault((c["system"], c["multiple"]), []).append(c["ratio"])
            parts.append(f"{c['system']}@{c['multiple']:g}x {c['bound']}{c['ratio']:.2f}")
        print(f"{seed:>4}  {minutes:>10.1f}  " + "  ".join(parts), flush=True)
    for (system, multiple), values in ratios.items():
        finite = [v for v in values if math.isfinite(v) and v > 0]
        if not finite:
            continue
        spread = math.exp(statistics.pstdev(math.log(v) for v in finite))
        print(f"{system} at {multiple:g}x: median {statistics.median(finite):.2f}, "
              f"range {min(finite):.2f}-{max(finite):.2f}, geometric sd x{spread:.2f} over the "
              f"{len(finite)} of {len(seeds)} seeds where a side crossed the target (bounds taken as values)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
