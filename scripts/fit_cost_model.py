#!/usr/bin/env python3
"""Fit the simulator's step-time cost model to GPU calibration files; print errors; plot fit vs measurement.

    python scripts/fit_cost_model.py                      # every preset, plots into docs/img/cost_fit_*.png
    python scripts/fit_cost_model.py --path my.json --model llama3.1-8b --gpu-mem-GB 80 --plot-dir /tmp
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from autellix.sim import cost  # noqa: E402
from autellix.sim import hardware as hw

ROOT = Path(__file__).resolve().parents[1]


def report(title: str, profile: dict, key: str, cm: cost.CostModel, decode_column: str,
           verbose: bool) -> dict:
    pts = cost.fit_points(profile, key, cm, decode_column)
    print(f"\n== {title}  (entry {key}, tp={cm.tp}, decode column {decode_column})")
    if verbose:
        for comp, rows in pts.items():
            for label, m, p in rows:
                print(f"  {comp:12s} {label:22s} measured {m*1e3:9.3f} ms  model {p*1e3:9.3f} ms"
                      f"  err {(p - m) / m * 100:+6.1f}%")
    for comp, rows in pts.items():
        mean, mx = cost.relative_errors(rows)
        note = "  (eager, launch-bound: reference only; decode steps cover this range)" \
            if comp == "linear_small" else ""
        print(f"  {comp:12s} n={len(rows):2d}  mean rel err {mean*100:5.1f}%  max {mx*100:5.1f}%{note}")
    print(f"  coefficients: memory line {cm.mem0*1e3:.3f} ms + {cm.mem1*1e6:.2f} us/token; compute line "
          f"{cm.comp0*1e3:.3f} ms + {cm.comp1*1e6:.2f} us/token; decode KV {cm.dec_ctx*1e9:.2f} ns/context "
          f"token; prefill max({cm.pf_floor*1e3:.3f} ms, {cm.pf0*1e3:.3f} ms + {cm.pf1*1e9:.1f} ns*n + "
          f"{cm.pf2*1e12:.3f} ps*n^2)")
    print(f"  swap per block: out per-block copies {cm.swap_out_many*1e6:.1f} us, out batched "
          f"{cm.swap_out_batched*1e6:.1f} us, in batched {cm.swap_in_batched*1e6:.1f} us "
          f"({cm.swap_out_many / cm.swap_out_batched:.0f}x faster batched)")
    if cm.tp > 1:
        print(f"  all-reduce ESTIMATE (tp={cm.tp}): {cm.ar_fixed*1e3:.2f} ms/step + "
              f"{cm.ar_per_token*1e6:.2f} us/token")
    print(f"  KV capacity: {cm.kv_capacity_tokens:,} tokens = {cm.kv_capacity_blocks:,} blocks of "
          f"{cm.block_tokens}")
    return pts


def plot(title: str, profile: dict, key: str, cm: cost.CostModel, decode_column: str, out: Path) -> None:
    e = profile[key]
    fig, axs = plt.subplots(2, 2, figsize=(13, 9.5))
    ax = axs.ravel()
    # linear: eager points, both roofline lines and the model (their max)
    Ms = [r["M"] for r in e["linear"]]
    ax[0].loglog(Ms, [r["s"] * 1e3 for r in e["linear"]], "ko", label="measured (eager)")
    grid = [2 ** (i / 8) for i in range(0, 8 * 14 + 1)]
    ax[0].loglog(grid, [(cm.mem0 + cm.mem1 * m) * 1e3 for m in grid], "b:",
                 label="memory line (graph decode)")
    ax[0].loglog(grid, [max(1e-3, (cm.comp0 + cm.comp1 * m) * 1e3) for m in grid], "g:", label="compute line")
    ax[0].loglog(grid, [cm.forward_time(int(m)) * 1e3 if cm.tp == 1 else
                        (cm.forward_time(int(m)) - cm.ar_fixed - cm.ar_per_token * int(m)) * 1e3
                        for m in grid], "r-", label="model (max)")
    ax[0].set(title="linear: all projections, M batched tokens", xlabel="M tokens", ylabel="ms",
              ylim=(min(r["s"] for r in e["linear"]) * 1e3 / 2, None))
    # decode: time vs context per batch size
    Bs = sorted({r["B"] for r in e["decode"]})
    for i, B in enumerate(Bs):
        rows = sorted((r for r in e["decode"] if r["B"] == B), key=lambda r: r["L"])
        col = plt.cm.viridis(i / max(1, len(Bs) - 1))
        ax[1].plot([r["L"] for r in rows], [r[decode_column] * 1e3 for r in rows], "o", color=col,
                   label=f"B={B}")
        Ls = range(128, max(r["L"] for r in rows) + 1, 64)
        ax[1].plot(Ls, [(cm.step_time(B, B * L) - cm.ar_fixed - cm.ar_per_token * B) * 1e3 for L in Ls],
                   "-", color=col)
    ax[1].set(xscale="log", title=f"decode step ({decode_column}): dots measured, lines model",
              xlabel="context L per sequence", ylabel="ms")
    Lt = sorted({r["L"] for r in e["decode"]})
    ax[1].set_xticks(Lt, [str(x) for x in Lt])
    ax[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    # prefill attention
    ns = [r["n"] for r in e["prefill"]]
    ax[2].loglog(ns, [r["attn_s"] * 1e3 for r in e["prefill"]], "ko", label="measured")
    g2 = [2 ** (i / 8) for i in range(8 * 6, 8 * 15 + 1)]
    ax[2].loglog(g2, [cm.prefill_attn_time([(int(n), 0)]) * 1e3 for n in g2], "r-", label="model")
    ax[2].set(title="prefill causal attention, one sequence", xlabel="prompt tokens n", ylabel="ms")
    # swap per block
    sw, nb = e["swap"], e["swap"]["blocks"]
    names = ["out per-block\ncopies", "out gathered\none copy", "in one copy"]
    meas = [sw["many_small_s"] / nb, sw["gather_one_copy_s"] / nb, sw["h2d_one_copy_s"] / nb]
    model = [cm.swap_out_many, cm.swap_out_batched, cm.swap_in_batched]
    xs = range(3)
    ax[3].bar([x - 0.2 for x in xs], [m * 1e6 for m in meas], 0.4, color="k", label="measured")
    ax[3].bar([x + 0.2 for x in xs], [m * 1e6 for m in model], 0.4, color="r", label="model")
    ax[3].set(yscale="log", ylim=(1, None), xticks=list(xs), xticklabels=names,
              ylabel="us per 16-token block", title=f"KV swap ({nb} blocks measured)")
    for a in ax:
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"Cost model fit: {title} (shard only; all-reduce estimate not shown)" if cm.tp > 1
                 else f"Cost model fit: {title}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"  plot: {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", help="your own calibration JSON (default: every preset)")
    ap.add_argument("--model", default="llama3.1-8b", help="model entry for --path")
    ap.add_argument("--hardware", help="GPU preset for --path (sets GPU memory)")
    ap.add_argument("--gpu-mem-GB", type=float, help="GPU memory for --path")
    ap.add_argument("--decode-column", default="graph_s", choices=("graph_s", "eager_s"))
    ap.add_argument("--plot-dir", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every calibration point")
    a = ap.parse_args(argv)
    jobs = []
    if a.path:
        cm = cost.load_cost_model(a.hardware, a.model, path=a.path, gpu_mem_GB=a.gpu_mem_GB,
                                  decode_column=a.decode_column)
        key = hw.MODELS[a.model].profile_key if a.model in hw.MODELS else a.model
        jobs.append((a.model, hw.read_profile(a.path), key, cm, "custom"))
    else:
        for g in hw.GPUS.values():
            profile = hw.read_profile(hw.find_calibration_file(g.profile_file))
            for m in hw.MODELS.values():
                cm = cost.load_cost_model(g.name, m.name, decode_column=a.decode_column)
                jobs.append((f"{g.name} {m.name}", profile, m.profile_key, cm, f"{g.name}_{m.name}"))
    for title, profile, key, cm, tag in jobs:
        report(title, profile, key, cm, a.decode_column, a.verbose)
        if not a.no_plots:
            plot(title, profile, key, cm, a.decode_column, Path(a.plot_dir) / f"cost_fit_{tag}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
