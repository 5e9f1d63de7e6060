"""The clients' tally of scripts/chaos.py: every outcome counted, and the closing report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    dying: int = 0
    """Failed (error status or connection error) while the part serving the call died."""
    lost: int = 0
    rerouted: int = 0
    """Refused by a dead replica and sent to the other one (what a load balancer does)."""
    reads: int = 0
    reads_failed: int = 0
    """GET /v1/models failures not explained by a dying replica: must be 0 (engine deaths are retried)."""
    backwards: int = 0
    reads_unavailable: int = 0
    """Program reads answered 503 (the store restarting and the replica had not seen the program)."""
    short: int = 0
    programs: int = 0
    split_agents: int = 0
    why: Counter = field(default_factory=Counter)
    acked: Counter = field(default_factory=Counter)
    """program -> calls answered 200 to their client."""
    max_read: dict[tuple[str, str], int] = field(default_factory=dict)

    def lose(self, why: str) -> None:
        self.lost += 1
        self.why[why] += 1

    def report(self, dep: Any, args: Any) -> int:
        warm = [r for r in dep.rss[8:] if r == r]  # after 2 minutes of 15 s samples
        growth = (warm[-1] - warm[0]) / warm[0] if len(warm) >= 2 else float("nan")
        print(f"\nchaos: {args.minutes:g} min, {args.agents} agents, kills {dict(dep.kills)}, "
              f"{self.programs} programs")
        print(f"  calls sent {self.sent}, answered {self.answered}, failed while their part died "
              f"{self.dying}, lost {self.lost} {dict(self.why) or ''} (rerouted by the client LB: "
              f"{self.rerouted})")
        print(f"  GET /v1/models: {self.reads} sent, {self.reads_failed} failed other than by a dying "
              "replica")
        print(f"  program reads that went backwards or lost the program: {self.backwards} (503, store "
              f"restarting: {self.reads_unavailable}); programs whose final entry is short of their "
              f"answered calls: {self.short} of {len(self.acked)}")
        print(f"  inferred agents split into several programs: {self.split_agents}")
        if dep.restarts:
            print(f"  engine start-up {dep.started_in:.0f} s; restarts after SIGKILL: "
                  + ", ".join(f"{t:.0f}" for t in dep.restarts) + f" s (max/start-up "
                  f"{max(dep.restarts) / dep.started_in:.2f})")
        for what, times in sorted(dep.recoveries.items()):
            print(f"  {what} back after: " + ", ".join(f"{t:.1f}" for t in times) + " s")
        first, last = (warm[0], warm[-1]) if warm else (0.0, 0.0)
        print(f"  replica A RSS after warm-up: {first:.1f} -> {last:.1f} MB ({growth:+.1%})")
        print(f"  /dev/shm files left after shutdown: {len(dep.shm_left)} {sorted(dep.shm_left)[:5]}")
        ok = (self.lost == 0 and self.backwards == 0 and self.short == 0 and self.reads_failed == 0
              and not dep.shm_left and growth < 0.10)
        print("  RESULT:", "PASS" if ok else "FAIL")
        return 0 if ok else 1
