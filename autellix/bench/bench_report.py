"""What `autellix bench` prints and writes: the shared sweep report (report.py) for real targets,
plus the replay's own records (per call, per program, per target).

The headline is one summary line: each target's throughput at equal mean latency against the FIRST
target (the baseline), at the first `--latency-multiples` value (default report.HEADLINE_MULTIPLE) x the
baseline's lowest-rate latency, with the P95 comparison beside it so a gain bought with a worse tail is
visible.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from autellix import report
from autellix.bench.plan import BenchOutput

COLUMNS = ("policy", "rate", "programs", "failed_programs", "mean_latency", "p95_latency", "p99_latency",
           "mean_jct", "mean_ttft", "mean_tpot", "preemptions_per_call", "prefix_cache_hit_rate",
           "backlog_growth", "wall_s")


def comparisons(out: BenchOutput, multiples: tuple[float, ...]) -> list[dict[str, Any]]:
    """Every target against the first, on mean and on P95 latency. A row where any program failed counts
    as not sustaining its rate (latency NaN): its statistics cover the completed programs only."""
    baseline = out.plan.targets[0].name
    rows = [dict(r, mean_latency=math.nan, p95_latency=math.nan) if r["failed_programs"] else r
            for r in out.rows]
    return (report.compare(rows, baseline, metric="mean_latency", multiples=multiples)
            + report.compare(rows, baseline, metric="p95_latency", multiples=multiples))


def summary_line(comps: list[dict[str, Any]], headline: float) -> str:
    """`bench: autellix vs vllm: 2.10x programs/s at equal mean latency (P95: 1.90x) [target 5x ...]`."""
    parts = []
    for c in comps:
        if c["metric"] != "mean_latency" or c["multiple"] != headline:
            continue
        p95 = next((d for d in comps if d["metric"] == "p95_latency" and d["multiple"] == headline
                    and d["system"] == c["system"]), None)
        parts.append(f"{c['system']} vs {c['baseline']}: {_ratio(c)} programs/s at equal mean latency "
                     f"({c['rate_a']:.3g} vs {c['rate_b']:.3g}/s under {c['target']:.3g} s/token)"
                     + (f", P95 {_ratio(p95)}" if p95 else ""))
    if not parts:
        return "bench: no throughput comparison (one target, or a target without rows at every rate)"
    return f"bench ({headline:g}x baseline's lowest-rate latency): " + "; ".join(parts)


def _ratio(c: dict[str, Any]) -> str:
    r = c["ratio"]
    text = "n/a" if math.isnan(r) else ("inf" if math.isinf(r) else f"{r:.2f}x")
    if c["bound"] == "?":
        return f"{text} (neither reached the target: raise the rates)"
    return f"{c['bound']}{text}" if c["bound"] in (">=", "<=") else text


def payload(out: BenchOutput, comps: list[dict[str, Any]]) -> dict[str, Any]:
    plan = out.plan
    return {
        "command": "bench",
        "workload": plan.workload, "seed": plan.seed, "scale": plan.scale, "programs": plan.counts,
        "rates": plan.rates,
        "targets": [{"name": t.name, "url": t.base_url, "model": out.targets[t.name].model,
                     "root": out.targets[t.name].root, "max_model_len": out.targets[t.name].max_model_len,
                     "tokenizer": out.tokenizers.get(t.name), "error": out.targets[t.name].error}
                    for t in plan.targets],
        "results": out.rows,
        "comparisons": comps,
        "program_records": [p.to_json() for run in out.runs for p in run.programs],
        "calls": [c.to_json() for run in out.runs for c in run.calls],
    }


def report_bench(out: BenchOutput, args: argparse.Namespace) -> int:
    """Print the table and summary, write JSON (and the plot); exit status 1 if no target completed a
    single program (the run produced nothing to compare), else 0."""
    given = getattr(args, "latency_multiples", None)
    multiples = tuple(given or report.DEFAULT_MULTIPLES)
    headline = given[0] if given else report.HEADLINE_MULTIPLE  # the first multiple given is the headline
    comps = comparisons(out, multiples)
    print(f"workload {out.plan.workload}, {'/'.join(map(str, out.plan.counts))} programs per point, "
          f"seed {out.plan.seed}, scale {out.plan.scale:g}")
    print(report.format_table(out.rows, COLUMNS))
    for metric, label in (("mean_latency", "mean"), ("p95_latency", "P95")):
        group = [c for c in comps if c["metric"] == metric]
        if group:
            print(f"throughput at equal {label} latency:\n" + report.format_comparisons(group))
    for row in out.rows:
        if row["failed_programs"]:
            errors = "; ".join(f"{n} x {e}" for e, n in row["errors"].items())
            print(f"bench: {row['policy']} @ {row['rate']:g}/s: {row['failed_programs']} of "
                  f"{row['programs']} programs failed ({errors})", file=sys.stderr)
    print(summary_line(comps, headline))
    report.write_json(args.json, payload(out, comps))
    if args.plot:
        targets = {c["metric"]: c["target"] for c in comps if c["multiple"] == headline}
        label = f"{headline:g}x {out.plan.targets[0].name} at {out.plan.rates[0]:g}/s"
        report.plot_latency(out.rows, args.plot, title=f"{out.plan.workload} (real engines)", targets=targets,
                            target_label=label)
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return 0 if any(r.get("completed_programs") for r in out.rows) else 1
