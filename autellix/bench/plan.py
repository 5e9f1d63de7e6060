"""BenchPlan: what one `autellix bench` run measures (targets, workload, rates or concurrency), read from
the command line, and BenchOutput, what it collected. Fairness rules: sweep.py."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from autellix.bench.driver import RunResult
from autellix.bench.targets import Target, TargetInfo, parse_targets
from autellix.workloads import generate, parse_counts, program_counts


@dataclass(frozen=True)
class BenchPlan:
    """One real sweep. `counts[i]` programs run at `rates[i]`: the first counts[i] of one draw of
    max(counts) programs, so every rate replays a prefix of the same programs."""

    workload: str
    targets: list[Target]
    rates: list[float]
    counts: list[int]
    seed: int = 0
    scale: float = 1.0
    model: str | None = None
    tokenizer: str | None = None
    timeout: float = 600.0
    cooldown: float = 2.0
    cache_salt: bool = True
    send_identity: bool = True


@dataclass
class BenchOutput:
    plan: BenchPlan
    targets: dict[str, TargetInfo] = field(default_factory=dict)
    tokenizers: dict[str, str] = field(default_factory=dict)
    runs: list[RunResult] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


def run_order(targets: list[Target], rate_index: int) -> list[Target]:
    """Alternate the order at each rate (A B, B A, A B, ...): counterbalances drift and warm-up."""
    return list(targets) if rate_index % 2 == 0 else list(reversed(targets))


def plan_from_args(args: argparse.Namespace) -> BenchPlan:
    counts = program_counts(parse_counts(args.programs), len(args.rates))
    generate(args.workload, 1, 1.0, args.seed, args.scale)  # fail fast on a bad workload or scale
    rates, counts = zip(*sorted(zip(args.rates, counts)))  # each count stays with its rate
    return BenchPlan(
        workload=args.workload, targets=parse_targets(args.target), rates=list(rates),
        counts=list(counts), seed=args.seed, scale=args.scale, model=args.model, tokenizer=args.tokenizer,
        timeout=args.timeout, cooldown=args.cooldown, cache_salt=not args.no_cache_salt,
        send_identity=not args.no_identity)
