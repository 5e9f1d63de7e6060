"""Compare a real closed-loop fleet run with the simulator's prediction of it, point by point.

    python scripts/fleet_sim_check.py REAL.json SIM.json [--plot OUT.png] [--map vllm=fcfs]

REAL.json: `autellix bench --concurrency` output; SIM.json: `autellix sim --concurrency` output on the same
workload, scale, seed and engine settings, with the real engine's calibration file. `--map` names the
simulator's policy for each real target (default: vllm=fcfs, every other target by its own name).
Prints calls/min and prefix-hit share, real (mean, min-max over repeats) beside simulated, and the error.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("real")
    ap.add_argument("sim")
    ap.add_argument("--plot", help="calls/min against concurrency: real (bars: min-max) and simulated")
    ap.add_argument("--map", action="append", default=["vllm=fcfs"], metavar="TARGET=POLICY")
    args = ap.parse_args()
    names = dict(m.split("=", 1) for m in args.map)
    real = json.load(open(args.real))["results"]
    sim = {(r["policy"], r["concurrency"]): r for r in json.load(open(args.sim))["results"]}
    print(f"{'target':>10} {'N':>4} {'real calls/min':>22} {'sim':>7} {'error':>7} "
          f"{'real hits':>10} {'sim hits':>9}")
    pairs = []
    for r in real:
        s = sim.get((names.get(r["policy"], r["policy"]), r["concurrency"]))
        if s is None:
            continue
        err = s["calls_per_min"] / r["calls_per_min"] - 1
        pairs.append((r, s))
        spread = f"{r['calls_per_min']:.1f} ({r['calls_per_min_min']:.1f}-{r['calls_per_min_max']:.1f})"
        print(f"{r['policy']:>10} {r['concurrency']:>4} {spread:>22} {s['calls_per_min']:>7.1f} {err:>+7.0%} "
              f"{r['prefix_hit_share']:>10.0%} {s['prefix_hit_share']:>9.0%}")
    if args.plot and pairs:
        plot(pairs, args.plot)
        print(f"wrote {args.plot}")


def plot(pairs: list[tuple[dict, dict]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for k, name in enumerate(dict.fromkeys(r["policy"] for r, _ in pairs)):
        group = sorted(((r, s) for r, s in pairs if r["policy"] == name), key=lambda p: p[0]["concurrency"])
        xs = [r["concurrency"] for r, _ in group]
        ys = [r["calls_per_min"] for r, _ in group]
        err = [[y - r["calls_per_min_min"] for y, (r, _) in zip(ys, group)],
               [r["calls_per_min_max"] - y for y, (r, _) in zip(ys, group)]]
        color = f"C{k}"
        ax.errorbar(xs, ys, yerr=err, marker="o", ms=5, capsize=3, color=color, label=f"{name} (real)")
        ax.plot(xs, [s["calls_per_min"] for _, s in group], ls="--", marker="x", color=color,
                label=f"{name} (simulated)")
    ax.set_xlabel("programs in flight (concurrency)")
    ax.set_ylabel("calls per minute")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
