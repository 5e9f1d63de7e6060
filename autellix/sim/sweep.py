"""`autellix sim --workload W --policy P1,P2 --rates R1,R2 ...`: simulated rate sweeps.

Every rate point generates the workload once (seeded: the same programs for every policy, arrival times
scaled by 1/rate across rates) and runs each policy on it, policies interleaved rate by rate. The JSON
holds one row per (policy, rate) and the throughput-at-equal-latency comparisons against the baselines.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from autellix.balance import BALANCERS
from autellix.policy import PolicyConfig
from autellix.report import (
    DEFAULT_MULTIPLES,
    STABLE_GROWTH,
    compare,
    format_comparisons,
    format_table,
    plot_latency,
    write_json,
)
from autellix.sim import hardware as hw
from autellix.sim.cluster import simulate
from autellix.sim.config import SWAP_MODES, EngineConfig, sim_policy
from autellix.sim.cost import CostModel, load_cost_model
from autellix.workloads import WORKLOADS, ProgramSpec, generate, parse_counts, program_counts

TABLE_COLUMNS = ("policy", "rate", "mean_latency", "p95_latency", "p99_latency", "mean_jct", "mean_ttft",
                 "preemptions_per_call", "swaps_per_call", "backlog_growth", "wall_s")


@dataclass(frozen=True)
class SweepSpec:
    """One sweep. Invariants (checked by `validate`): a known workload, >= 1 known policy, >= 1 positive
    rate, programs one count >= 1 or one per rate, engines >= 1, a known balancer."""

    workload: str
    policies: tuple[str, ...]
    rates: tuple[float, ...]
    programs: int | tuple[int, ...] = 1000
    engines: int = 1
    balancer: str = "locality"
    hardware: str = "h200"
    model: str = "llama3.1-8b"
    calibration: str | None = None
    seed: int = 0
    scale: float = 1.0
    config: EngineConfig = field(default_factory=EngineConfig)
    policy_config: PolicyConfig = field(default_factory=PolicyConfig)
    baselines: tuple[str, ...] = ("fcfs", "fcfs-nocache")
    multiples: tuple[float, ...] = DEFAULT_MULTIPLES

    def validate(self, need_rates: bool = True) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; choose one of {sorted(WORKLOADS)}")
        if not self.policies:
            raise ValueError("--policy: need at least one policy")
        for p in self.policies:
            sim_policy(p)
        if need_rates and not self.rates:
            raise ValueError("--rates: need at least one arrival rate (programs/s), e.g. --rates 1,2,4")
        if any(not r > 0 for r in self.rates):
            raise ValueError(f"--rates: every rate must be > 0, got {list(self.rates)}")
        program_counts(self.programs, len(self.rates) if need_rates else 1)
        if self.engines < 1:
            raise ValueError(f"--engines: must be >= 1, got {self.engines}")
        if self.balancer not in BALANCERS:
            raise ValueError(f"--balancer: unknown {self.balancer!r}; choose one of {sorted(BALANCERS)}")
        if not self.scale > 0:
            raise ValueError(f"--scale: must be > 0, got {self.scale}")


def cost_model(spec: SweepSpec) -> tuple[CostModel, int]:
    """The fitted cost model and the swap pool size in blocks (swap_space_GB of host memory)."""
    cost = load_cost_model(spec.hardware, spec.model, path=spec.calibration)
    if spec.calibration:
        profile = hw.read_profile(spec.calibration)
        key = hw.MODELS[spec.model].profile_key if spec.model in hw.MODELS else spec.model
    else:
        profile = hw.read_profile(hw.find_calibration_file(hw.gpu_preset(spec.hardware).profile_file))
        key = hw.model_preset(spec.model).profile_key
    per_block = float(profile[key]["kv_bytes_per_token"]) * cost.block_tokens
    return cost, int(spec.config.swap_space_GB * 1e9 // per_block)


@lru_cache(maxsize=2)
def _programs(workload: str, n: int, draw: int, rate: float, seed: int,
              scale: float) -> tuple[ProgramSpec, ...]:
    return tuple(generate(workload, n, rate, seed, scale, draw=draw))


def run_point(spec: SweepSpec, rate: float, policy: str, cost: CostModel, cpu_blocks: int) -> dict[str, Any]:
    """Simulate one (policy, rate) point (`rate` one of spec.rates); return its result row. The programs
    are the rate's count's prefix of one draw of the sweep's largest count (workloads.generate)."""
    counts = program_counts(spec.programs, len(spec.rates))
    n = counts[spec.rates.index(rate)]
    programs = _programs(spec.workload, n, max(counts), rate, spec.seed, spec.scale)
    res = simulate(programs, policy, cost, spec.engines, spec.balancer, spec.config, spec.policy_config,
                   cpu_blocks)
    totals = res.totals()
    return {"policy": policy, "balancer": spec.balancer, "engines": spec.engines, "rate": rate,
            "programs": len(programs), "calls": len(res.calls), "swap": spec.config.swap,
            "kv_offload": spec.config.kv_offload,
            "max_num_seqs": spec.config.max_num_seqs, "prefill_weight": spec.policy_config.prefill_weight,
            **res.summary().as_dict(),
            "sim_end_s": res.end, "wall_s": res.wall_s, "events": res.events, **totals.as_dict()}


def _task(args: tuple[SweepSpec, float, str, CostModel, int]) -> dict[str, Any]:
    return run_point(*args)


def run_sweep(spec: SweepSpec, progress: bool = True, jobs: int = 1) -> dict[str, Any]:
    """Run every (rate, policy) point, policies interleaved per rate; return the JSON payload."""
    from tqdm import tqdm

    spec.validate()
    cost, cpu_blocks = cost_model(spec)
    tasks = [(spec, rate, p, cost, cpu_blocks) for rate in spec.rates for p in spec.policies]
    started = time.perf_counter()
    bar = tqdm(total=len(tasks), desc=f"sim {spec.workload}", unit="point", disable=not progress)
    rows: list[dict[str, Any]] = []
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            for row in pool.map(_task, tasks):
                rows.append(row)
                bar.set_postfix_str(f"{row['policy']}@{row['rate']:g}")
                bar.update()
    else:
        for task in tasks:
            bar.set_postfix_str(f"{task[2]}@{task[1]:g}")
            rows.append(_task(task))
            bar.update()
    bar.close()
    comparisons = []
    for stable in (False, True):  # the run as measured, then only its steady-state points
        for baseline in spec.baselines:
            comparisons += compare(rows, baseline, multiples=spec.multiples, stable=stable)
    return {"config": _describe(spec, cost), "results": rows, "comparisons": comparisons,
            "wall_s": time.perf_counter() - started}


def _describe(spec: SweepSpec, cost: CostModel) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    d["config"] = dataclasses.asdict(spec.config)
    d["policy_config"] = {k: v for k, v in dataclasses.asdict(spec.policy_config).items() if k != "extra"}
    d["cost_model"] = cost.name
    d["kv_capacity_tokens"] = spec.config.gpu_blocks * cost.block_tokens if spec.config.gpu_blocks \
        else cost.kv_capacity_tokens
    d["block_tokens"] = cost.block_tokens
    d["request_overhead_s"] = spec.config.request_overhead(cost)
    return d


# -- command line -------------------------------------------------------------------------------------

def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None


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
        seed=args.seed, scale=args.scale, config=config, policy_config=pconf,
        baselines=tuple(b for b in args.baselines.split(",") if b),
        multiples=_floats(args.targets, "--targets"))


def run_sweep_command(args: argparse.Namespace) -> int:
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
    from autellix.sim.fleet import format_fleet, plot_fleet, run_fleet

    if args.rates:
        raise ValueError("--rates and --concurrency: give one (open loop or closed loop), not both")
    concurrency = tuple(int(c) for c in _floats(args.concurrency, "--concurrency"))
    payload = run_fleet(spec, concurrency, progress=not args.quiet, jobs=args.jobs)
    print(format_fleet(payload))
    if args.json:
        write_json(args.json, payload)
    if args.plot:
        plot_fleet(payload["results"], args.plot, fit=payload["config"]["working_set_fit"],
                   title=f"{spec.workload} x{spec.scale:g}, closed loop, {spec.model} on {spec.hardware}")
    return 0
