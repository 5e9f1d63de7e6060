"""`autellix sim --workload W ...`: the command line of simulated sweeps (options, spec, what is printed).

`--rates R1,R2,...` runs an open-loop sweep, `--concurrency N1,N2,...` a closed-loop fleet (sweep.py);
either prints its table and comparisons and writes the JSON payload (and a plot) when asked.
"""

from __future__ import annotations

import argparse

from autellix.balance import BALANCERS
from autellix.policy import PolicyConfig
from autellix.report import (
    DEFAULT_MULTIPLES,
    STABLE_GROWTH,
    format_comparisons,
    format_fleet,
    format_table,
    plot_fleet,
    plot_latency,
    write_json,
)
from autellix.sim import hardware as hw
from autellix.sim.config import SWAP_MODES, EngineConfig
from autellix.sim.spec import SweepSpec
from autellix.sim.sweep import run_fleet, run_sweep
from autellix.sim.toy import SCENARIOS, run_scenario
from autellix.workloads import WORKLOADS, parse_counts

TABLE_COLUMNS = ("policy", "rate", "mean_latency", "p95_latency", "p99_latency", "mean_jct", "mean_ttft",
                 "preemptions_per_call", "swaps_per_call", "backlog_growth", "wall_s")
FLEET_COLUMNS = ("policy", "concurrency", "programs_per_hour", "calls_per_min", "mean_jct", "p95_jct",
                 "prefill_tokens", "new_prompt_tokens", "prefix_hit_share", "holds_granted",
                 "holds_expired", "holds_released_pressure", "programs_paused", "wall_s")

MIXED_COLUMNS = ("policy", "concurrency", "programs_per_hour", "p95_jct", "prefill_tokens",
                 "interactive_programs", "interactive_jct_mean", "interactive_jct_p95",
                 "interactive_ttft_p95", "wall_s")


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def add_sim_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `autellix sim`: the paper's toy scenarios, or workload sweeps (open or closed loop)."""
    sim = subparsers.add_parser(
        "sim", help="simulate policies: the paper's toy scenarios or agent workloads",
        description="Run the policy core on a simulated engine. With --scenario: the paper's unit-step toy "
                    "examples. Otherwise: a workload rate sweep.")
    sim.add_argument("--scenario", choices=sorted(SCENARIOS), help="a unit-step toy scenario")
    sim.add_argument("--policy", help="comma-separated policies (default: the scenario's set)")
    sim.add_argument("--json", metavar="OUT", help="write results as JSON to OUT")
    add_sweep_arguments(sim)
    sim.set_defaults(func=_cmd_sim)


def _cmd_sim(args: argparse.Namespace) -> int:
    if not args.scenario:
        return run_sweep_command(args)
    results = run_scenario(args.scenario, args.policy.split(",") if args.policy else None)
    scenario = SCENARIOS[args.scenario]
    print(f"{scenario.name}: {scenario.about}")
    print(f"{'policy':<10} {'total wait':>10} {'makespan':>9}  per-call wait")
    for name, r in results.items():
        waits = " ".join(f"{k}={v}" for k, v in sorted(r.waits.items()))
        print(f"{name:<10} {r.total_wait:>10} {r.makespan:>9}  {waits}")
    if args.json:
        write_json(args.json, {
            "scenario": scenario.name,
            "total_wait": {n: r.total_wait for n, r in results.items()},
            "makespan": {n: r.makespan for n, r in results.items()},
            "call_wait": {n: r.waits for n, r in results.items()},
        })
    return 0


def add_sweep_arguments(sim: argparse.ArgumentParser) -> None:
    """Add the workload-sweep options to the existing `autellix sim` parser (--policy, --json exist)."""
    default = EngineConfig()
    g = sim.add_argument_group("workload sweep (when --scenario is absent)")
    g.add_argument("--workload", help=f"one of {', '.join(sorted(WORKLOADS))}")
    g.add_argument("--rates", help="comma-separated program arrival rates (programs/s): an open-loop sweep")
    g.add_argument("--concurrency", metavar="N1,N2,...",
                   help="closed loop instead of --rates: keep N programs in flight, the next starting when "
                        "one ends (an agent fleet); steady state after the first 20%% of completions")
    g.add_argument("--programs", default="1000", metavar="N|N1,N2,...",
                   help="programs per rate point, or one count per rate (default 1000); with --concurrency "
                        "the programs completed per point")
    g.add_argument("--interactive", metavar="WORKLOAD",
                   help="with --concurrency: an open-loop stream of this workload's programs, interactive, "
                        "beside the fleet, which is then batch; each class's figures apart")
    g.add_argument("--interactive-rate", type=float, default=0.1, metavar="R",
                   help="the interactive stream's arrivals, programs/s (default 0.1)")
    g.add_argument("--interactive-programs", type=int, default=200, metavar="M",
                   help="interactive programs per point; it ends when the last completes (default 200)")
    g.add_argument("--engines", type=int, default=1, help="engines behind the balancer (default 1)")
    g.add_argument("--balancer", default="locality", help=f"one of {', '.join(sorted(BALANCERS))}")
    g.add_argument("--hardware", default="h200", help=f"GPU preset: {', '.join(sorted(hw.GPUS))}")
    g.add_argument("--model", default="llama3.1-8b", help=f"model preset: {', '.join(sorted(hw.MODELS))}")
    g.add_argument("--calibration", metavar="FILE", help="your own calibration JSON instead of the preset")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--scale", type=float, default=1.0, help="multiply every token count (default 1)")
    g.add_argument("--swap", default="batched", help=f"preemption: {', '.join(SWAP_MODES)}")
    g.add_argument("--max-num-seqs", type=int, default=default.max_num_seqs)
    g.add_argument("--max-batched-tokens", type=int, default=default.max_batched_tokens)
    g.add_argument("--swap-space-gb", type=float, default=default.swap_space_GB)
    g.add_argument("--kv-offload", action="store_true",
                   help="keep evicted prefix-cache blocks in the swap space and copy them back on a hit "
                        "(vLLM's CPU KV offloading) instead of recomputing them")
    g.add_argument("--request-overhead", type=float, metavar="S",
                   help="seconds from a call's issue to the scheduler (default: the calibration's, else 0)")
    g.add_argument("--prefill-weight", type=float, help="service per computed prompt token (policy)")
    g.add_argument("--baselines", default="fcfs,fcfs-nocache", help="systems to compare against")
    g.add_argument("--targets", default=",".join(f"{m:g}" for m in DEFAULT_MULTIPLES),
                   help="latency targets as multiples of the baseline's lowest-rate latency; each "
                        "comparison is printed as measured and counting only points whose backlog did "
                        f"not grow (backlog_growth <= {STABLE_GROWTH:g})")
    g.add_argument("--plot", metavar="OUT.png",
                   help="latency-vs-rate plot (mean and P95; points whose backlog grew are hollow); "
                        "closed loop: programs per hour and completion time vs concurrency")
    g.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    if not args.workload:
        raise ValueError("--workload is required without --scenario (e.g. --workload chat)")
    if args.rates is None and not args.concurrency:
        raise ValueError("--rates (open loop, e.g. --rates 1,2,4) or --concurrency (closed loop, e.g. "
                         "--concurrency 16,32,64) is required")
    config = EngineConfig(max_num_seqs=args.max_num_seqs, max_batched_tokens=args.max_batched_tokens,
                          swap=args.swap, swap_space_GB=args.swap_space_gb, kv_offload=args.kv_offload,
                          request_overhead_s=args.request_overhead)
    pconf = PolicyConfig.from_env()
    if args.prefill_weight is not None:
        pconf = pconf.replace(prefill_weight=args.prefill_weight)
    return SweepSpec(
        workload=args.workload, policies=tuple(p for p in (args.policy or "fcfs,autellix").split(",") if p),
        rates=_floats(args.rates or "", "--rates"), programs=parse_counts(args.programs),
        engines=args.engines,
        balancer=args.balancer, hardware=args.hardware, model=args.model, calibration=args.calibration,
        seed=args.seed, scale=args.scale, config=config, policy_config=pconf, interactive=args.interactive,
        interactive_rate=args.interactive_rate, interactive_programs=args.interactive_programs,
        baselines=tuple(b for b in args.baselines.split(",") if b),
        multiples=_floats(args.targets, "--targets"))


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run the sweep `args` describe, open loop (--rates) or closed loop (--concurrency)."""
    spec = spec_from_args(args)
    if args.concurrency:
        return _run_fleet_command(args, spec)
    payload = run_sweep(spec, progress=not args.quiet, jobs=args.jobs)
    print(format_table(payload["results"], TABLE_COLUMNS))
    if payload["comparisons"]:
        print("\nthroughput at equal mean latency ([stable points]: backlog_growth <= "
              f"{STABLE_GROWTH}, i.e. sustained in a steady state):")
        print(format_comparisons(payload["comparisons"]))
    if args.json:
        write_json(args.json, payload)
    if args.plot:
        plot_latency(payload["results"], args.plot,
                     title=f"{spec.workload}, {spec.model} on {spec.engines}x {spec.hardware}")
    return 0


def _run_fleet_command(args: argparse.Namespace, spec: SweepSpec) -> int:
    if args.rates:
        raise ValueError("--rates and --concurrency: give one (open loop or closed loop), not both")
    concurrency = tuple(int(c) for c in _floats(args.concurrency, "--concurrency"))
    payload = run_fleet(spec, concurrency, progress=not args.quiet, jobs=args.jobs)
    print(format_fleet(payload, MIXED_COLUMNS if spec.interactive else FLEET_COLUMNS))
    if args.json:
        write_json(args.json, payload)
    if args.plot:
        plot_fleet(payload["results"], args.plot, fit=payload["config"]["working_set_fit"],
                   title=f"{spec.workload} x{spec.scale:g}, closed loop, {spec.model} on {spec.hardware}")
    return 0
