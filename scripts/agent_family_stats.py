#!/usr/bin/env python3
"""Print each agent-family workload's statistics next to its targets (autellix/workloads/agent_stats.py).

    PYTHONPATH=. .venv/bin/python scripts/agent_family_stats.py [--programs 2000] [--seed 0]

Targets: agent-swe, the recorded mini-swe-agent sessions' own statistics (the fit must recover them);
agent-bigturn, ten held-out sessions (16 calls, 14k mean prompt, 930 new tokens per turn); agent-long,
Claude Code fleets (vLLM RFC #57103 / AgentX; reuse is a lower bound). agent-mix has none.
"""

from __future__ import annotations

import argparse

from autellix.workloads import generate
from autellix.workloads.agent_family import FAMILY, PRESETS
from autellix.workloads.agent_stats import family_stats, targets

COLUMNS = ("turns", "turns_median", "first_prompt", "prompt", "new", "output", "pause", "calls", "reuse",
           "subagent_share", "final", "final_at_median", "peak")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    goals = targets()
    print(f"{args.programs} programs per workload, seed {args.seed}; cells: measured (target, deviation)")
    print("| workload | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for w in FAMILY:
        s = family_stats(generate(w, args.programs, 1.0, args.seed))
        cells = []
        for c in COLUMNS:
            text = f"{s[c]:.3f}" if c in ("reuse", "subagent_share", "pause") else f"{s[c]:,.1f}"
            if c in goals.get(w, {}):
                t = goals[w][c]
                bound = w == "agent-long" and c == "reuse"
                dev = "" if bound else f", {s[c] / t - 1:+.1%}"
                text = f"**{text}** ({'>' if bound else ''}{t:,.4g}{dev})"
            cells.append(text)
        print(f"| {w} | " + " | ".join(cells) + " |")
    for name, fn in PRESETS.items():
        print(f"{name}: {fn()}")


if __name__ == "__main__":
    main()
