#!/usr/bin/env python3
"""Closed-loop fleets of the agent family: is autellix ever behind the best peer rule, on any fleet?

Runs fcfs, continuum, thunderagent and autellix (`--policies`) on each family workload (agent-swe,
agent-bigturn, agent-long, agent-mix; docs/workloads.md) at 1x, 2x and 4x residency, over 3 seeds, with
and without the host tier, on the simulator's H200 / Llama-3.1-8B presets, and prints per point:

- each policy's programs per hour and P95 program completion time (mean over the seeds);
- autellix / better peer: autellix's programs per hour over the best other policy's (named);
- autellix P95 / lower peer P95: autellix's tail over the shortest other tail;
- ceiling: fcfs with an unbounded host tier (`--kv-offload --swap-space-gb CEILING_GB`): evicted KV is
  always copied back, never recomputed; and autellix's share of it;

then the minimum ratio over the family per (residency, tier) and overall. JSON: --json (default
docs/results/fleet_family.json).

Residency: 1x = the programs whose peak working sets fit in the GPU KV cache at once (cache tokens /
the mean peak over 200 programs of seed 0; agent_family.peak_history_tokens: a subagent that ends above
its parent's final history counts at its peak). `autellix sim --concurrency` prints `working_set_fit`
from the last call's history instead, which is the same without subagents; both are reported.

Host tier: "off" = the simulator's defaults (no offload); "host" = `--kv-offload --swap-space-gb 256`
for every policy. The simulator is driven through its command line (`python -m autellix.cli sim
--concurrency ... --json`), one call per (workload, seed, tier) running every policy and residency.

Programs per point: max(--min-programs, --waves x concurrency) completions. The closed loop starts all N
programs at once and its metrics discard the first 20% of completions, so 5 waves put the whole first,
synchronised wave inside the discarded warm-up. agent-mix gets 3x the waves (one per preset): its long
sessions last ~10x its short ones, and with few waves the window ends while slots still hold long
sessions, so short ones dominate the completions counted (survivorship; a 2-wave smoke run showed
throughputs above the 1x figure).

Example, a quick smoke run (one workload, one seed, fewer programs):

    PYTHONPATH=. .venv/bin/python scripts/fleet_family.py --workloads agent-bigturn --seeds 0 --waves 2 \\
        --min-programs 100 --json /tmp/fleet_family_smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from autellix.workloads import generate
from autellix.workloads.agent_family import FAMILY, PRESETS, peak_history_tokens

POLICIES = ("fcfs", "continuum", "thunderagent", "autellix")
SYSTEM = "autellix"
MIX = "agent-mix"
HOST_TIER_GB = 256.0
CEILING_GB = 1e6
"""An unbounded host tier in effect: 1 PB of host KV, far beyond any run's total history."""
FIT_PROGRAMS, FIT_SEED = 200, 0
"""Programs (and seed) the 1x fit averages over, as `autellix sim --concurrency` does."""
TIERS = {"off": [], "host": ["--kv-offload", "--swap-space-gb", f"{HOST_TIER_GB:g}"]}


def sim(args: list[str], out: Path) -> dict[str, Any]:
    """One `autellix sim` run through its command line; its JSON payload."""
    cmd = [sys.executable, "-m", "autellix.cli", "sim", "--quiet", "--json", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(out.read_text())


def residency_fit(workload: str, common: list[str], tmp: Path) -> dict[str, float]:
    """1x for one workload: cache tokens over the mean peak working set; also the CLI's own fit."""
    payload = sim(["--workload", workload, "--concurrency", "1", "--programs", "2", "--policy", "fcfs",
                   "--baselines", "fcfs", *common], tmp / f"fit-{workload}.json")
    cache = payload["config"]["kv_capacity_tokens"]
    programs = generate(workload, FIT_PROGRAMS, 1.0, FIT_SEED)
    peak = statistics.fmean(peak_history_tokens(p) for p in programs)
    return {"kv_capacity_tokens": cache, "mean_peak_tokens": peak, "fit": cache / peak,
            "cli_working_set_fit": payload["config"]["working_set_fit"]}


def plan(args: argparse.Namespace, fits: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One job per (workload, seed, tier) plus one ceiling job per (workload, seed)."""
    jobs = []
    for w in args.workloads:
        conc = [max(1, round(k * fits[w]["fit"])) for k in args.residency]
        waves = args.waves * (len(PRESETS) if w == MIX else 1)
        n = max(args.min_programs, waves * max(conc))
        for seed in args.seeds:
            base = ["--workload", w, "--seed", str(seed), "--programs", str(n),
                    "--concurrency", ",".join(map(str, conc)), *args.common]
            for tier in args.tiers:
                jobs.append({"workload": w, "seed": seed, "tier": tier, "concurrency": conc, "programs": n,
                             "args": [*base, "--policy", ",".join(args.policies), "--baselines",
                                      args.policies[0], *TIERS[tier]]})
            if args.ceiling:
                jobs.append({"workload": w, "seed": seed, "tier": "ceiling", "concurrency": conc,
                             "programs": n, "args": [*base, "--policy", "fcfs", "--baselines", "fcfs",
                                                     "--kv-offload", "--swap-space-gb", f"{CEILING_GB:g}"]})
    return jobs


def run_jobs(jobs: list[dict[str, Any]], tmp: Path, workers: int, progress: bool) -> list[dict[str, Any]]:
    """Run every job (at most `workers` simulator processes at once); rows tagged with their job."""
    from tqdm import tqdm

    def one(k: int) -> list[dict[str, Any]]:
        job = jobs[k]
        payload = sim(job["args"], tmp / f"job-{k}.json")
        conc = job["concurrency"]
        return [{**r, "workload": job["workload"], "seed": job["seed"], "tier": job["tier"],
                 "residency": conc.index(r["concurrency"]) if r["concurrency"] in conc else None}
                for r in payload["results"]]

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="fleet family", unit="run", disable=not progress, file=sys.stderr)
    with bar, ThreadPoolExecutor(workers) as pool:
        for result in pool.map(one, range(len(jobs))):
            rows += result
            bar.update()
    return rows


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per (workload, residency, tier): seed means per policy, the ratios, the ceiling."""
    def mean(tier: str, w: str, k: int, policy: str, key: str) -> float:
        vals = [r[key] for r in rows if (r["tier"], r["workload"], r["residency"], r["policy"]) ==
                (tier, w, k, policy)]
        return statistics.fmean(vals) if vals else float("nan")

    points = []
    for w in args.workloads:
        for k, mult in enumerate(args.residency):
            conc = next(r["concurrency"] for r in rows if r["workload"] == w and r["residency"] == k)
            ceiling = mean("ceiling", w, k, "fcfs", "programs_per_hour")
            for tier in args.tiers:
                pph = {p: mean(tier, w, k, p, "programs_per_hour") for p in args.policies}
                p95 = {p: mean(tier, w, k, p, "p95_jct") for p in args.policies}
                peers = [p for p in args.policies if p != SYSTEM]
                best = max(peers, key=lambda p: pph[p])
                tail = min(peers, key=lambda p: p95[p])
                points.append({
                    "workload": w, "residency": mult, "concurrency": conc, "tier": tier,
                    "programs_per_hour": pph, "p95_jct": p95, "better_peer": best,
                    "ratio": pph[SYSTEM] / pph[best], "lower_p95_peer": tail,
                    "p95_ratio": p95[SYSTEM] / p95[tail], "ceiling": ceiling,
                    "share_of_ceiling": pph[SYSTEM] / ceiling})
    return points


def minima(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lowest autellix / better-peer ratio over the family, per (residency, tier), and overall."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["residency"], p["tier"]), []).append(p)
    out = [{"residency": r, "tier": t, **_worst(g)} for (r, t), g in groups.items()]
    return [*out, {"residency": "all", "tier": "all", **_worst(points)}]


def _worst(group: list[dict[str, Any]]) -> dict[str, Any]:
    w = min(group, key=lambda p: p["ratio"])
    return {"min_ratio": w["ratio"], "at": f"{w['workload']} {w['residency']:g}x {w['tier']}",
            "max_p95_ratio": max(p["p95_ratio"] for p in group)}


def format_points(points: list[dict[str, Any]], policies: list[str]) -> str:
    head = (f"{'workload':14} {'res':>4} {'N':>4} {'tier':>4} | "
            + " ".join(f"{p[:12]:>12}" for p in policies)
            + f" | {'vs peer':>7} {'peer':>12} | {'P95 ratio':>9} {'peer':>12} | {'ceiling':>8} {'share':>5}")
    lines = ["programs per hour (mean of seeds); P95 JCT ratio = autellix / lowest peer P95", head,
             "-" * len(head)]
    for p in points:
        lines.append(f"{p['workload']:14} {p['residency']:>3g}x {p['concurrency']:>4} {p['tier']:>4} | "
                     + " ".join(f"{p['programs_per_hour'][q]:>12.1f}" for q in policies)
                     + f" | {p['ratio']:>7.3f} {p['better_peer']:>12} | {p['p95_ratio']:>9.3f} "
                       f"{p['lower_p95_peer']:>12} | {p['ceiling']:>8.1f} {p['share_of_ceiling']:>5.2f}")
    lines += ["", "P95 program completion time (s, mean of seeds):"]
    for p in points:
        lines.append(f"{p['workload']:14} {p['residency']:>3g}x {p['tier']:>4} | "
                     + " ".join(f"{q}={p['p95_jct'][q]:.0f}" for q in policies))
    return "\n".join(lines)


def format_minima(mins: list[dict[str, Any]]) -> str:
    lines = ["minimum autellix / better peer over the family:"]
    for m in mins:
        res = m["residency"] if isinstance(m["residency"], str) else f"{m['residency']:g}x"
        lines.append(f"  {res:>4} {m['tier']:>4}: {m['min_ratio']:.3f} at {m['at']} "
                     f"(max P95 ratio {m['max_p95_ratio']:.3f})")
    return "\n".join(lines)


def _csv(text: str, cast: type = str) -> list:
    return [cast(x) for x in text.replace(" ", "").split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(FAMILY), help="family workloads (default: all four)")
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help=f"simulator policies, {SYSTEM} among them (default: {','.join(POLICIES)})")
    ap.add_argument("--residency", default="1,2,4", help="fleet sizes as multiples of 1x (default 1,2,4)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    ap.add_argument("--tiers", default="off,host", help="off (no host tier), host (256 GB); default both")
    ap.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                    help="skip the fcfs-with-unbounded-host-tier ceiling runs")
    ap.add_argument("--waves", type=int, default=5,
                    help="programs per point = waves x the largest concurrency (default 5, see above)")
    ap.add_argument("--min-programs", type=int, default=300,
                    help="at least this many programs per point (default 300)")
    ap.add_argument("--hardware", default="h200")
    ap.add_argument("--model", default="llama3.1-8b")
    ap.add_argument("--jobs", type=int, default=1,
                    help="simulator processes at once (default 1; 2 at most, on a 2-core machine)")
    ap.add_argument("--json", default="docs/results/fleet_family.json", help="output JSON path")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    args.workloads = _csv(args.workloads)
    args.policies = _csv(args.policies)
    args.residency = _csv(args.residency, float)
    args.seeds = _csv(args.seeds, int)
    args.tiers = _csv(args.tiers)
    unknown = [w for w in args.workloads if w not in FAMILY] + [t for t in args.tiers if t not in TIERS]
    if unknown or SYSTEM not in args.policies or len(args.policies) < 2 or not 1 <= args.jobs <= 2:
        ap.error(f"need family workloads ({', '.join(FAMILY)}), tiers among off,host, {SYSTEM} and at "
                 f"least one peer in --policies, 1 <= --jobs <= 2 (unknown: {unknown})")
    if not args.seeds or not args.residency or not args.tiers or args.waves < 1 or args.min_programs < 2:
        ap.error("need >= 1 seed, residency and tier, --waves >= 1 and --min-programs >= 2")
    args.common = ["--hardware", args.hardware, "--model", args.model]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleet_family_") as d:
        tmp = Path(d)
        fits = {w: residency_fit(w, args.common, tmp) for w in args.workloads}
        for w, f in fits.items():
            print(f"{w}: 1x = {f['fit']:.1f} programs (mean peak {f['mean_peak_tokens']:.0f} tokens; "
                  f"autellix sim's working_set_fit {f['cli_working_set_fit']:.1f})", flush=True)
        jobs = plan(args, fits)
        rows = run_jobs(jobs, tmp, args.jobs, not args.quiet)
    points = summarise(rows, args)
    mins = minima(points)
    print(format_points(points, args.policies))
    print()
    print(format_minima(mins))
    wall = time.perf_counter() - started
    print(f"\nwall time {wall:.0f} s")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "json"}
    out.write_text(json.dumps({"config": {**config, "host_tier_gb": HOST_TIER_GB, "ceiling_gb": CEILING_GB},
                               "fits": fits, "points": points, "minima": mins, "runs": rows,
                               "jobs": [{k: v for k, v in j.items()} for j in jobs], "wall_s": wall},
                              indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
