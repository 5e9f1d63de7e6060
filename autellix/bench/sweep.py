"""`autellix bench`: the rate sweep over several real targets, interleaved, with one report.

Fairness rules (docs/bench.md):
- Every target gets the very same programs (same workload, seed, scale; prompts are a pure function of
  them) at every rate, clipped to the smallest `max_model_len` among the targets.
- Targets are measured one at a time, interleaved rate by rate, in alternating order (A B, then B A, ...)
  so slow drift of a shared machine hits them alike and neither always runs on a "warm" machine.
- Each (rate, target) run has its own `cache_salt` and program-id tag: no prefix-cache hit and no
  process-table state survives from an earlier run.
- A target that does not answer is re-probed before each of its runs; its failure is reported in its row
  and never stops the other targets.
"""

from __future__ import annotations

import asyncio
import math
import sys
import uuid
from collections import Counter
from typing import Any

import httpx
from tqdm import tqdm

from autellix import metrics
from autellix.bench.driver import ReplayOptions, RunResult, replay
from autellix.bench.plan import BenchOutput, BenchPlan, run_order
from autellix.bench.prompts import PromptBuilder, load_tokenizer, local_tokenizer_for
from autellix.bench.targets import Target, engine_counters, probe
from autellix.workloads import generate


def summarize_run(run: RunResult, programs: int, counters: dict[str, float] | None = None) -> dict[str, Any]:
    """One `results` row: the simulator's schema (policy = target name) plus failure counts and, for a
    vLLM engine, its own preemption and prefix-cache counters over the run (`counters`: deltas)."""
    ok = [p for p in run.programs if p.ok]
    failed_calls = [c for c in run.calls if c.error]
    errors = Counter(c.error for c in failed_calls)
    if run.aborted:
        errors[run.aborted] += 1
    row: dict[str, Any] = {"policy": run.target, "balancer": "-", "engines": 1, "rate": run.rate,
                           "programs": programs}
    # Only completed programs enter the latency statistics; failures are counted, not hidden.
    row.update(metrics.summarize(ok, [c for c in run.calls if not c.error]).as_dict())
    row["programs"] = programs
    row.update({"completed_programs": len(ok), "failed_programs": programs - len(ok),
                "failed_calls": len(failed_calls), "wall_s": run.wall_s,
                "errors": dict(errors.most_common(5))})
    # The client cannot see queueing inside the engine, nor (without /metrics) preemptions: say unknown.
    row["mean_wait"] = row["swaps_per_call"] = math.nan
    preemptions, hit_rate = engine_rates(counters or {}, len(run.calls))
    row["preemptions_per_call"], row["prefix_cache_hit_rate"] = preemptions, hit_rate
    return row


def engine_rates(counters: dict[str, float], calls: int) -> tuple[float, float]:
    """(preemptions per call, prefix-cache hit rate) from a vLLM engine's counter deltas over a run;
    NaN where the engine did not report them."""
    pre = counters.get("vllm:num_preemptions_total")
    queries = counters.get("vllm:prefix_cache_queries_total")
    hits = counters.get("vllm:prefix_cache_hits_total")
    return (pre / max(1, calls) if pre is not None else math.nan,
            hits / queries if hits is not None and queries else math.nan)


def _failed_row(target: Target, rate: float, programs: int, error: str) -> dict[str, Any]:
    nan = math.nan
    return {"policy": target.name, "balancer": "-", "engines": 1, "rate": rate, "programs": programs,
            "mean_latency": nan, "p95_latency": nan, "p99_latency": nan, "mean_jct": nan,
            "completed_programs": 0, "failed_programs": programs, "failed_calls": 0, "wall_s": 0.0,
            "errors": {f"target unreachable: {error}": 1}}


async def prompt_builders(client: httpx.AsyncClient, plan: BenchPlan,
                    out: BenchOutput) -> dict[str, PromptBuilder]:
    """Probe every target once; one prompt builder per distinct tokenizer."""
    cache: dict[str, PromptBuilder] = {}
    builders: dict[str, PromptBuilder] = {}
    for t in plan.targets:
        info = out.targets[t.name] = await probe(client, t)
        if info.error:
            print(f"bench: target {t.name} ({t.base_url}) is not answering: {info.error}; "
                  f"it will be retried before each of its runs", file=sys.stderr)
        spec = plan.tokenizer or local_tokenizer_for(info.root) or "default"
        if spec not in cache:
            cache[spec] = PromptBuilder(load_tokenizer(None if spec == "default" else spec))
        builders[t.name] = cache[spec]
        out.tokenizers[t.name] = cache[spec].info.source
    if len({b.info.source for b in builders.values()}) > 1:
        print("bench: warning: targets use different tokenizers, so prompts differ between them",
              file=sys.stderr)
    return builders


async def run_bench(plan: BenchPlan, progress: bool = True) -> BenchOutput:
    """Run the sweep; never raises for a failing target (see module docstring)."""
    out = BenchOutput(plan)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=plan.timeout) as client:
        builders = await prompt_builders(client, plan, out)
        lens = [i.max_model_len for i in out.targets.values() if i.max_model_len]
        max_len = min(lens) if lens else None
        span = sum(n / r for n, r in zip(plan.counts, plan.rates)) * len(plan.targets)
        print(f"bench: {'/'.join(map(str, plan.counts))} {plan.workload} programs at "
              f"{'/'.join(f'{r:g}' for r in plan.rates)} programs/s x {len(plan.targets)} targets; the "
              f"arrival schedules alone take {span / 60:.1f} min (more when a target is past saturation)",
              file=sys.stderr)
        bar = tqdm(total=sum(plan.counts) * len(plan.targets), unit="prog",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        for ri, (rate, n) in enumerate(zip(plan.rates, plan.counts)):
            programs = generate(plan.workload, n, rate, plan.seed, plan.scale, draw=max(plan.counts))
            for target in run_order(plan.targets, ri):
                bar.set_postfix_str(f"{target.name} @ {rate:g}/s")
                info = await probe(client, target)
                if info.error:
                    out.rows.append(_failed_row(target, rate, n, info.error))
                    print(f"bench: {target.name} @ {rate:g}/s skipped: {info.error}", file=sys.stderr)
                    bar.update(n)
                    continue
                out.targets[target.name] = info
                tag = f"{target.name}-r{rate:g}-{uuid.uuid4().hex[:8]}"
                opts = ReplayOptions(model=plan.model or info.model or "", run_tag=tag, timeout=plan.timeout,
                                     max_model_len=max_len, cache_salt=tag if plan.cache_salt else None,
                                     send_identity=plan.send_identity)
                before = await engine_counters(client, target)
                run = await replay(client, target, programs, rate, builders[target.name], opts,
                                   on_program_done=lambda _: bar.update(1))
                after = await engine_counters(client, target)
                deltas = {k: after[k] - before[k] for k in after if k in before}
                bar.update(n - len(run.programs))
                out.runs.append(run)
                row = summarize_run(run, n, deltas)
                out.rows.append(row)
                # Each point is printed as it finishes, so an interrupted sweep still leaves its figures.
                bar.write(f"bench: {target.name} @ {rate:g}/s: mean {row['mean_latency']:.4f} s/token, "
                          f"p95 {row['p95_latency']:.4f}, mean JCT {row['mean_jct']:.1f} s", file=sys.stderr)
                if run.aborted:
                    print(f"bench: {target.name} @ {rate:g}/s aborted: {run.aborted}", file=sys.stderr)
                if plan.cooldown > 0:
                    await asyncio.sleep(plan.cooldown)  # let the engine drain and settle
        bar.close()
    out.rows.sort(key=lambda r: (r["rate"], [t.name for t in plan.targets].index(r["policy"])))
    return out
