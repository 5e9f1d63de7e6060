"""Program inference against ground truth: the real agent sessions in shared/data/lmcache_agent_trace
(mini-swe-agent and tau-bench, with session ids), rebuilt as chat calls and replayed all at once,
interleaved, through a real gateway that is told nothing about them (autellix.bench.identity_check), as
chat completions, Anthropic Messages or OpenAI Responses calls (each API's own request shape).

    .venv/bin/python scripts/infer_programs_check.py [--seeds 3] [--api chat|messages|responses|all]
                                                     [--source miniswe --source taubench]

Prints, per API and seed: calls attributed to their session's program (target >= 99%), wrongly merged
programs (target 0) and split sessions. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys

from autellix.bench.api_shapes import APIS
from autellix.bench.identity_check import SOURCES, load_sessions, run_check


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="interleavings to replay (default 3)")
    ap.add_argument("--api", choices=(*APIS, "all"), default="all", help="API to replay over (default: all)")
    ap.add_argument("--source", action="append", choices=SOURCES, help="trace folders (default: both)")
    args = ap.parse_args()
    sessions = load_sessions(tuple(args.source or SOURCES))
    calls = sum(len(s.calls) for s in sessions)
    print(f"{len(sessions)} sessions, {calls} calls, replayed concurrently")
    print(f"{'api':>9} {'seed':>4} {'right':>14} {'share':>7} {'merged programs':>16} {'split sessions':>15} "
          f"{'programs':>9}")
    ok = True
    for api in APIS if args.api == "all" else (args.api,):
        for seed in range(args.seeds):
            a = run_check(sessions, seed, api=api)
            print(f"{api:>9} {seed:>4} {a.right:>6} / {a.calls:<6} {a.share:>6.1%} {a.merged_programs:>16} "
                  f"{a.split_sessions:>15} {a.programs:>9}")
            ok &= a.share >= 0.99 and a.merged_programs == 0
    print("targets (>= 99% right, 0 merged):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
