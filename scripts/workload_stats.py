"""Print each workload's measured statistics next to the paper's targets, and how long generation takes.

    .venv/bin/python scripts/workload_stats.py [--programs 5000] [--seed 0] [--workloads chat,react,...]

Per call: `prompt` is the full prompt (what a cacheless engine prefills), `new` the part beyond the prefix
call's prompt + output (what a perfect prefix cache still computes). Used to tune the calibrated constants
(react.SYSTEM_FACTOR, tree_search.PROMPT_FACTOR) and to fill docs/workloads.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from autellix.workloads import WORKLOADS, ProgramSpec, generate

# Paper targets per call (docs/workloads.md): calls/program, prompt tokens, output tokens. Chat's prompt
# target is the new user text per call (see autellix/workloads/chat.py), the others' the full prompt.
TARGETS: dict[str, tuple[float, float, float, str]] = {
    "chat": (6.66, 256, 277, "new"),
    "react": (10.75, 735, 34, "prompt"),
    "tree": (159.7, 467, 73, "prompt"),
}
ORDER = ("chat", "mooncake", "react", "tree", "coding", "mixed")


def stats(programs: list[ProgramSpec]) -> dict[str, float]:
    """Per-program and per-call means of one generated workload."""
    calls = np.array([p.num_calls for p in programs])
    prompt = np.array([c.prompt_tokens for p in programs for c in p.calls])
    new = np.array([p.new_prompt_tokens(i) for p in programs for i in range(p.num_calls)])
    out = np.array([c.output_tokens for p in programs for c in p.calls])
    pause = np.array([c.tool_pause for p in programs for c in p.calls])
    text = np.mean([c.prompt_text is not None for p in programs for c in p.calls])
    return {
        "programs": len(programs),
        "calls": float(calls.mean()),
        "calls_p50": float(np.median(calls)),
        "calls_p99": float(np.percentile(calls, 99)),
        "calls_max": int(calls.max()),
        "prompt": float(prompt.mean()),
        "new": float(new.mean()),
        "output": float(out.mean()),
        "prefix_share": float(np.mean([c.prefix_call is not None for p in programs for c in p.calls])),
        "threads": float(np.mean([p.num_threads for p in programs])),
        "parallel": float(np.mean([p.is_parallel for p in programs])),
        "pause": float(pause.mean()),
        "text_share": float(text),
        "rate_check": float(len(programs) / programs[-1].arrival),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--workloads", default=",".join(ORDER))
    args = ap.parse_args()
    names = [w for w in args.workloads.split(",") if w]
    for w in names:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; valid: {', '.join(sorted(WORKLOADS))}")
    header = (f"{'workload':9} {'calls':>7} {'p50':>5} {'p99':>6} {'max':>5} {'prompt':>7} {'new':>6} "
              f"{'output':>6} {'prefix':>6} {'thr':>4} {'par':>5} {'pause':>6} {'text':>5} {'gen_s':>6}")
    print(f"{args.programs} programs per workload, seed {args.seed}")
    print(header)
    for w in names:
        generate(w, 1, args.rate, args.seed)  # load and cache the data first: time generation alone
        t = time.perf_counter()
        programs = generate(w, args.programs, args.rate, args.seed)
        elapsed = time.perf_counter() - t
        s = stats(programs)
        print(f"{w:9} {s['calls']:7.2f} {s['calls_p50']:5.0f} {s['calls_p99']:6.0f} {s['calls_max']:5d} "
              f"{s['prompt']:7.0f} {s['new']:6.0f} {s['output']:6.1f} {s['prefix_share']:6.2f} "
              f"{s['threads']:4.1f} {s['parallel']:5.2f} {s['pause']:6.2f} {s['text_share']:5.2f} "
              f"{elapsed:6.2f}")
        if w in TARGETS:
            c, pr, o, which = TARGETS[w]
            got = s[which]
            print(f"{'  target':9} {c:7.2f} {'':5} {'':6} {'':5} "
                  f"{'' if which != 'prompt' else f'{pr:7.0f}':>7} "
                  f"{'' if which != 'new' else f'{pr:6.0f}':>6} "
                  f"{o:6.1f}   errors: calls {s['calls'] / c - 1:+.1%}, {which} {got / pr - 1:+.1%}, "
                  f"output {s['output'] / o - 1:+.1%}")


if __name__ == "__main__":
    main()
