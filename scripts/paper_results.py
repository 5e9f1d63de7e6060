#!/usr/bin/env python3
"""Run the simulator experiments behind docs/simulator.md (issue 3, "Must show").

Every experiment is one `autellix sim` sweep (the same code path as the CLI: sim.sweep.run_sweep); this
script only fixes the settings, writes each sweep's JSON to --out and its plot to docs/img/sim_<name>.png,
and prints its table and comparisons. Engine: Llama-3.1-8B on the H200 preset,
EngineConfig defaults (max_num_seqs 256, 8192-token chunked prefill, batched swap, 64 GB swap space).

    .venv/bin/python scripts/paper_results.py --jobs 2                  # everything (~40 min here)
    .venv/bin/python scripts/paper_results.py --only chat,tree --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from autellix.metrics import latency_target, sustainable_rate
from autellix.policy import PolicyConfig
from autellix.report import (
    backlog_grew,
    compare,
    format_comparisons,
    format_table,
    plot_latency,
    series,
    write_json,
)
from autellix.sim.cli import TABLE_COLUMNS
from autellix.sim.config import EngineConfig
from autellix.sim.spec import SweepSpec
from autellix.sim.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
CHAT_RATES = (0.25, 0.5, 1, 1.5, 2, 2.5, 2.75, 3, 3.25, 3.5, 4, 5, 6, 8)
TREE_RATES = (0.25, 0.5, 0.6, 0.65, 0.7, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5)
MIXED_RATES = (0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.6, 1.75, 2, 2.5, 3, 4, 5, 6, 7, 8, 10)
# Policy knobs from AUTELLIX_* variables, as for `autellix sim` (e.g. AUTELLIX_PREEMPT_GAP=1).
BASE = dict(hardware="h200", model="llama3.1-8b", seed=0, policy_config=PolicyConfig.from_env())


def experiments() -> dict[str, SweepSpec]:
    """Programs per point: enough that the arrival window (programs / rate) is long against program
    durations, so FCFS's overload collapse (see docs/simulator.md) shows up at the rate it starts."""
    ex: dict[str, SweepSpec] = {
        "chat": SweepSpec("chat", ("fcfs", "fcfs-nocache", "mlfq", "autellix", "srpt"), CHAT_RATES,
                          programs=4000, **BASE),
        "tree": SweepSpec("tree", ("fcfs", "mlfq", "plas", "autellix", "srpt"), TREE_RATES, programs=1000,
                          **BASE),
        "mixed": SweepSpec("mixed", ("fcfs", "mlfq", "plas", "autellix", "srpt"), MIXED_RATES,
                           programs=2000, **BASE),
    }
    four = tuple(4 * r for r in (0.5, 1, 1.5, 2, 2.5, 2.75, 3, 3.25, 3.5, 4))
    for balancer in ("locality", "round_robin"):  # four engines, chat: the balancer comparison
        ex[f"chat4_{balancer}"] = SweepSpec("chat", ("autellix",), four, programs=16000, engines=4,
                                            balancer=balancer, **BASE)
    for e in (1, 2, 4, 8):  # engine scaling, autellix + locality, load scaled with the engines
        rates = tuple(e * r for r in (0.5, 1, 2, 2.5, 3, 3.5, 4, 5, 6))
        ex[f"scale{e}"] = SweepSpec("chat", ("autellix",), rates, programs=2000 * e, engines=e, **BASE)
    for swap in ("batched", "per-block", "recompute"):  # preemption mechanism, the busiest workload
        ex[f"swap_{swap}"] = SweepSpec("mixed", ("autellix",), MIXED_RATES, programs=2000,
                                       config=EngineConfig(swap=swap), **BASE)
    for w in (0.0, 1.0):  # prefill_weight sensitivity (0.25 is the default, in "mixed" above)
        policy = BASE["policy_config"].replace(prefill_weight=w)
        ex[f"mixed_pw{w:g}"] = SweepSpec("mixed", ("autellix",), MIXED_RATES, programs=2000,
                                         **(BASE | {"policy_config": policy}))
    ex["chat_h100"] = SweepSpec("chat", ("fcfs", "mlfq", "autellix", "srpt"),
                                (0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4), programs=4000,
                                **(BASE | {"hardware": "h100"}))  # half the KV cache of the H200
    for gb in (64, 512):  # a host tier for the prefix cache (vLLM's --kv-offloading-size), in the swap space
        offload = EngineConfig(kv_offload=True, swap_space_GB=gb)
        ex[f"chat_offload{gb}"] = SweepSpec("chat", ("fcfs", "mlfq", "autellix", "srpt"), CHAT_RATES,
                                            programs=4000, config=offload, **BASE)
        ex[f"mixed_offload{gb}"] = SweepSpec("mixed", ("fcfs", "mlfq", "autellix", "srpt"), MIXED_RATES,
                                             programs=2000, config=offload, **BASE)
    for name in ("tree", "mixed"):  # vLLM V1's default seats on H100/H200-class GPUs
        spec = ex[name]
        ex[f"{name}_seqs1024"] = dataclasses.replace(spec, policies=("fcfs", "autellix", "srpt"),
                                                     config=EngineConfig(max_num_seqs=1024))
    return ex


SINGLE = ("chat", "tree", "mixed", "tree_seqs1024", "mixed_seqs1024", "chat_h100", "chat_offload64",
          "chat_offload512", "mixed_offload64", "mixed_offload512")
"""Experiments plotted on their own; the others are drawn together by `combined_plots`."""


def plot(name: str, spec: SweepSpec, payload: dict[str, Any]) -> None:
    if name not in SINGLE:
        return
    title = f"{spec.workload}, {spec.model} on {spec.engines}x {spec.hardware}"
    if spec.config.kv_offload:
        title += f" (offload {spec.config.swap_space_GB:g} GB)"
    if spec.engines > 1:
        title += f" ({spec.balancer})"
    plot_latency(payload["results"], ROOT / "docs" / "img" / f"sim_{name}.png", title=title,
                 ylim_multiple=20.0)


def run(name: str, spec: SweepSpec, out: Path, jobs: int) -> dict[str, Any]:
    started = time.perf_counter()
    payload = run_sweep(spec, progress=True, jobs=jobs)
    write_json(out / f"sim_{name}.json", payload)
    plot(name, spec, payload)
    print(f"\n== {name}: {time.perf_counter() - started:.0f} s")
    print(format_table(payload["results"], TABLE_COLUMNS))
    print(format_comparisons(payload["comparisons"]))
    return payload


# -- markdown for docs/simulator.md (reads the JSON files only) ---------------------------------------

def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"sim_{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ms(value: Any) -> str:
    return "-" if value is None else f"{1000 * float(value):.1f}"


def _ratio(c: dict[str, Any]) -> str:
    r = c["ratio"]
    text = "n/a" if r is None else ("inf" if r == "inf" else f"{float(r):.2f}x")
    return {"": "", ">=": ">= ", "<=": "<= ", "?": "? "}[c["bound"]] + text


def md_latency(payload: dict[str, Any], metric: str = "mean_latency", key: str = "policy") -> str:
    groups = series(payload["results"], key)
    rates = sorted({r["rate"] for r in payload["results"]})
    names = list(groups)
    lines = ["| rate (prog/s) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for rate in rates:
        cells = [_ms(next((r[metric] for r in groups[n] if r["rate"] == rate), None)) for n in names]
        lines.append(f"| {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def md_comparisons(comparisons: list[dict[str, Any]]) -> str:
    lines = ["| system | baseline | 2x target | 5x target | 10x target |", "|---|---|---|---|---|"]
    pairs = list(dict.fromkeys((c["system"], c["baseline"], bool(c.get("stable"))) for c in comparisons))
    for system, baseline, stable in pairs:
        cs = {c["multiple"]: c for c in comparisons
              if (c["system"], c["baseline"], bool(c.get("stable"))) == (system, baseline, stable)}
        cells = [f"{_ratio(cs[m])} ({float(cs[m]['rate_a']):.2f} vs {float(cs[m]['rate_b']):.2f})"
                 if m in cs else "-" for m in (2.0, 5.0, 10.0)]
        label = f"{system}, stable points" if stable else system
        lines.append(f"| {label} | {baseline} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(out: Path) -> str:
    parts = []
    for name in SINGLE:
        payload = _load(out, name)
        if payload:
            parts += [f"### {name}: mean latency (ms/token)", md_latency(payload),
                      f"### {name}: P95 (ms/token)", md_latency(payload, "p95_latency"),
                      f"### {name}: P99 (ms/token)", md_latency(payload, "p99_latency"),
                      f"### {name}: throughput at equal mean latency", md_comparisons(payload["comparisons"])]
    merged = [r for b in ("locality", "round_robin")
              for r in (_load(out, f"chat4_{b}") or {}).get("results", [])]
    if merged:
        parts += ["### chat, 4 engines: mean latency (ms/token) by balancer",
                  md_latency({"results": merged}, key="balancer"),
                  md_comparisons(compare(merged, "round_robin", key="balancer")
                                 + compare(merged, "round_robin", key="balancer", stable=True))]
    scale = {e: _load(out, f"scale{e}") for e in (1, 2, 4, 8)}
    if scale[1]:
        base = scale[1]["results"]
        lines = ["| engines | sustainable rate, 5x target | per engine | sustainable rate, 10x target | "
                 "per engine | sustained (stable points), 5x | per engine |", "|---|---|---|---|---|---|---|"]
        for e, payload in scale.items():
            if not payload:
                continue
            rates = [r["rate"] for r in payload["results"]]
            lat = [r["mean_latency"] for r in payload["results"]]
            stable = [math.inf if backlog_grew(r) else r["mean_latency"] for r in payload["results"]]
            cells = []
            for m, lats in ((5.0, lat), (10.0, lat), (5.0, stable)):
                target = latency_target([r["rate"] for r in base], [r["mean_latency"] for r in base], m)
                got = sustainable_rate(rates, lats, target)
                cells += [f"{'>= ' if got.censored else ''}{got.rate:.2f}", f"{got.rate / e:.2f}"]
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        parts += ["### engine scaling (autellix, locality, chat)", "\n".join(lines)]
    swaps = [r | {"swap": b} for b in ("batched", "per-block", "recompute")
             for r in (_load(out, f"swap_{b}") or {}).get("results", [])]
    if swaps:
        parts += ["### mixed, autellix: preemption mechanism, mean latency (ms/token)",
                  md_latency({"results": swaps}, key="swap"),
                  md_comparisons(compare(swaps, "per-block", key="swap")
                                 + compare(swaps, "per-block", key="swap", stable=True)),
                  "swap-outs per 1000 calls", md_latency({"results": swaps}, "swaps_per_call", key="swap")]
    pws = [r | {"pw": w} for w, name in (("0", "mixed_pw0"), ("0.25", "mixed"), ("1", "mixed_pw1"))
           for r in (_load(out, name) or {}).get("results", []) if r["policy"] == "autellix"]
    if pws:
        parts += ["### mixed, autellix: prefill_weight sensitivity, mean latency (ms/token)",
                  md_latency({"results": pws}, key="pw")]
    return "\n\n".join(parts) + "\n"


def _merged(out: Path, names: dict[str, str], key: str) -> list[dict[str, Any]]:
    return [r | {key: label} for name, label in names.items()
            for r in (_load(out, name) or {}).get("results", [])]


def combined_plots(out: Path) -> None:
    """One plot per comparison: balancers, preemption mechanisms, engine counts, prefill weights."""
    img = ROOT / "docs" / "img"
    rows = _merged(out, {"chat4_locality": "locality", "chat4_round_robin": "round_robin"}, "balancer")
    if rows:
        plot_latency(rows, img / "sim_balancer.png", "chat, autellix, 4x h200", key="balancer")
    rows = _merged(out, {f"swap_{m}": m for m in ("batched", "per-block", "recompute")}, "swap")
    if rows:
        plot_latency(rows, img / "sim_swap.png", "mixed, autellix, 1x h200", key="swap")
    rows = [r | {"rate": r["rate"] / r["engines"]}
            for r in _merged(out, {f"scale{e}": f"{e} engine" + "s" * (e > 1) for e in (1, 2, 4, 8)},
                             "cluster")]
    if rows:
        plot_latency(rows, img / "sim_scaling.png", "chat, autellix, locality (x: rate per engine)",
                     key="cluster")
    rows = _merged(out, {"mixed_pw0": "0", "mixed": "0.25", "mixed_pw1": "1"}, "prefill_weight")
    rows = [r for r in rows if r["policy"] == "autellix"]
    if rows:
        plot_latency(rows, img / "sim_prefill_weight.png", "mixed, autellix: prefill_weight",
                     key="prefill_weight")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "build" / "sim-results"), help="folder for the JSON files")
    ap.add_argument("--only", help="comma-separated experiment names (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--markdown", action="store_true", help="print the docs tables from --out and exit")
    ap.add_argument("--replot", action="store_true", help="redraw the plots from --out and exit")
    args = ap.parse_args()
    out = Path(args.out)
    chosen = experiments()
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    if args.markdown:
        print(markdown(out))
        return 0
    if args.replot:
        for name, spec in chosen.items():
            payload = _load(out, name)
            if payload:
                plot(name, spec, payload)
        combined_plots(out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in chosen.items():
        run(name, spec, out, args.jobs)
    combined_plots(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
