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

With `--interactive W` (as `autellix sim --interactive`) the fleet is batch and an open-loop stream of
`interactive_programs` programs of W (workloads.interactive_stream: the same for every target, repeat and
point) arrives beside it once it has turned over (driver.replay_mixed); a run ends with the stream's last
program, so the fleet's `programs` + N only bound how many it may start, and each row has each class's
figures (fleet_report.mixed_row).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from tqdm import tqdm

from autellix.bench.calibration_file import kv_capacity_from_metrics
from autellix.bench.driver import FleetRanDry, ReplayOptions, RunResult, replay_closed, replay_mixed
from autellix.bench.fleet_report import (
    AVERAGED,
    FLEET_BENCH_COLUMNS,
    MIXED_AVERAGED,
    MIXED_BENCH_COLUMNS,
    fleet_row,
    mean_rows,
    mixed_row,
    plot_fleet_bench,
)
from autellix.bench.plan import BenchOutput, BenchPlan, run_order
from autellix.bench.prompts import PromptBuilder
from autellix.bench.sweep import prompt_builders
from autellix.bench.targets import Target, engine_counters
from autellix.report import fleet_ratios
from autellix.workloads import WORKLOADS, ProgramSpec, generate, interactive_stream, parse_counts


@dataclass(frozen=True)
class FleetPlan:
    """A closed-loop real sweep: `programs` completions per point, each point `repeats` times; with
    `interactive` a mixed sweep (module docstring). Invariant (`validate`): programs >= 2, repeats >= 1,
    and an interactive workload known, its rate > 0 and its program count >= 1."""

    bench: BenchPlan
    concurrency: list[int]
    programs: int
    repeats: int = 2
    interactive: str | None = None
    interactive_rate: float = 0.1
    interactive_programs: int = 20

    def validate(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"--repeats: need >= 1, got {self.repeats}")
        if self.programs < 2:
            raise ValueError("--programs: a closed loop needs one completion count >= 2, got "
                             f"{self.programs}")
        if self.interactive is None:
            return
        if self.interactive not in WORKLOADS:
            raise ValueError(f"--interactive: unknown workload {self.interactive!r}; choose one of "
                             f"{', '.join(sorted(WORKLOADS))}")
        if not self.interactive_rate > 0 or self.interactive_programs < 1:
            raise ValueError(f"--interactive-rate must be > 0 and --interactive-programs >= 1, got "
                             f"{self.interactive_rate}, {self.interactive_programs}")


async def _run_point(client: httpx.AsyncClient, target: Target, plan: FleetPlan, c: int,
                     fleet: Sequence[ProgramSpec], stream: Sequence[ProgramSpec], builder: PromptBuilder,
                     opts: ReplayOptions, bar: tqdm) -> RunResult:
    """One run: a fleet, or a fleet beside the interactive `stream` (with `plan.interactive`); the bar
    advanced by each completion that counts (fleet completions up to `programs`, or interactive programs
    ended)."""
    per_run = plan.interactive_programs if plan.interactive else plan.programs
    done = 0

    def tick(rec: Any) -> None:
        nonlocal done
        counts = not rec.batch if plan.interactive else rec.ok
        if counts and done < per_run:
            done += 1
            bar.update(1)

    if plan.interactive:
        run = await replay_mixed(client, target, fleet, c, stream, builder, opts, tick)
    else:
        run = await replay_closed(client, target, fleet, c, plan.programs, builder, opts, tick)
    bar.update(per_run - done)
    return run


async def run_fleet_bench(plan: FleetPlan, progress: bool = True) -> tuple[BenchOutput, dict[str, Any]]:
    """Run every (concurrency, repeat, target) point; never raises for a failing target (a mixed run's
    fleet running dry raises driver.FleetRanDry)."""
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
        stream = interactive_stream(plan.interactive, plan.interactive_programs, plan.interactive_rate,
                                    b.seed, b.scale) if plan.interactive else []
        per_run = plan.interactive_programs if plan.interactive else plan.programs
        total = len(plan.concurrency) * plan.repeats * len(b.targets) * per_run
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
                    run = await _run_point(client, target, plan, c, programs, stream, builders[target.name],
                                           opts, bar)
                    after = await engine_counters(client, target)
                    out.runs.append(run)
                    deltas = {k: after[k] - before[k] for k in after if k in before}
                    row = (mixed_row if plan.interactive else fleet_row)(run, plan.programs, deltas)
                    row["repeat"] = rep
                    runs.append(row)
                    bar.write(_run_line(row, target.name, c, rep), file=sys.stderr)
                    if b.cooldown > 0:
                        await asyncio.sleep(b.cooldown)
        bar.close()
    return out, _payload(plan, runs, capacity)


def _run_line(row: dict[str, Any], name: str, c: int, rep: int) -> str:
    """The progress line printed after each run."""
    line = (f"bench: {name} N={c} #{rep + 1}: {row.get('calls_per_min', math.nan):.1f} calls/min, "
            f"{row.get('programs_per_hour', math.nan):.1f} programs/h, prefix hits "
            f"{row.get('prefix_hit_share', math.nan):.0%}")
    if "interactive_failed" in row:
        line += (f"; interactive P95 completion {row.get('interactive_jct_p95', math.nan):.1f} s, "
                 f"{row['interactive_failed']} failed")
    return line


def _payload(plan: FleetPlan, runs: list[dict[str, Any]], capacity: dict[str, int | None]) -> dict[str, Any]:
    """The JSON: the config, the mean rows (targets in order within each concurrency), every run, ratios."""
    b = plan.bench
    rows = mean_rows(runs, MIXED_AVERAGED if plan.interactive else AVERAGED)
    names = [t.name for t in b.targets]
    rows.sort(key=lambda r: (r["concurrency"], names.index(r["policy"])))
    peak = _peak_history(b)
    fit = {n: cap / peak for n, cap in capacity.items() if cap}
    config = {"workload": b.workload, "scale": b.scale, "seed": b.seed, "concurrency": plan.concurrency,
              "programs": plan.programs, "repeats": plan.repeats, "kv_capacity_tokens": capacity,
              "mean_peak_history_tokens": peak,
              "working_set_fit": min(fit.values()) if fit else math.nan}
    metrics = ["calls_per_min", "programs_per_hour"]
    if plan.interactive:
        config |= {"interactive": plan.interactive, "interactive_rate": plan.interactive_rate,
                   "interactive_programs": plan.interactive_programs}
        metrics.append("interactive_jct_p95")
    return {"config": config, "results": rows, "runs": runs,
            "comparisons": [c for m in metrics for c in fleet_ratios(rows, (names[0],), m)]}


def _peak_history(plan: BenchPlan) -> float:
    """Mean full history (last call's prompt + output) of the workload's programs, in tokens."""
    programs = generate(plan.workload, 200, 1.0, plan.seed, plan.scale)
    return sum(p.calls[-1].prompt_tokens + p.calls[-1].output_tokens for p in programs) / len(programs)


def run_fleet_command(args: argparse.Namespace) -> int:
    """`autellix bench --concurrency`: run, print the table and ratios, write JSON (and the plot); exit
    status 1 when some run has no figures (fewer than two completions; mixed: no interactive program or
    fewer than two batch ones completed during the stream)."""
    from autellix.bench.plan import plan_from_args
    from autellix.report import format_fleet, write_json

    n = parse_counts(args.programs)
    if not isinstance(n, int):
        raise ValueError(f"--programs: a closed loop needs one completion count >= 2, got {args.programs!r}")
    args.rates = [1.0]  # the open-loop plan's rate is unused here
    plan = FleetPlan(plan_from_args(args), sorted(set(args.concurrency)), n, args.repeats, args.interactive,
                     args.interactive_rate, args.interactive_programs)
    plan.validate()
    try:
        out, payload = asyncio.run(run_fleet_bench(plan))
    except FleetRanDry as exc:
        raise ValueError(str(exc)) from exc  # a plan too small for the stream: the command's usage error
    payload["targets"] = [{"name": t.name, "url": t.base_url, "model": out.targets[t.name].model,
                           "tokenizer": out.tokenizers.get(t.name)} for t in plan.bench.targets]
    payload["program_records"] = [p.to_json() | {"concurrency": run.concurrency}
                                  for run in out.runs for p in run.programs]
    payload["calls"] = [c.to_json() | {"concurrency": run.concurrency} for run in out.runs for c in run.calls]
    print(_headline(plan))
    print(format_fleet(payload, MIXED_BENCH_COLUMNS if plan.interactive else FLEET_BENCH_COLUMNS))
    write_json(args.json, payload)
    if args.plot:
        plot_fleet_bench(payload, args.plot)
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    measured = "interactive_jct_mean" if plan.interactive else "calls_per_min"
    return 0 if all(measured in r for r in payload["runs"]) else 1


def _headline(plan: FleetPlan) -> str:
    b = plan.bench
    head = f"workload {b.workload}, scale {b.scale:g}, seed {b.seed}: "
    if plan.interactive:
        return (head + f"a batch fleet beside {plan.interactive_programs} interactive {plan.interactive} "
                f"programs at {plan.interactive_rate:g}/s from its first turnover on, {plan.repeats} "
                "repeats, interleaved")
    return head + f"{plan.programs} completions per point (20% warm-up), {plan.repeats} repeats, interleaved"
