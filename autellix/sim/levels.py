"""RunningLevels: an engine's running calls filed by policy priority, to find the worst ones quickly.

For level policies a running call's rank is (priority, order) (policy/levels.py: `rank` = (priority,
running first, order); priority is the level, after every interactive level for a yielding call), so the
worst running calls are the last in order of the highest non-empty priority. The engine
refiles a call whenever its level may have changed (admission and its own event steps, which is where
levels change), so `worst` never needs a full sort of the running set.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from autellix.policy import LevelPolicy
from autellix.sim.request import SimCall


class RunningLevels:
    __slots__ = ("queues", "order", "priority")

    def __init__(self, policy: LevelPolicy) -> None:
        self.queues: list[list[tuple[tuple[float, int], SimCall]]] = [[] for _ in range(2 * policy.levels)]
        self.order = policy.order
        self.priority = policy.priority

    def refile(self, sc: SimCall) -> None:
        """File (or move) a running call under its current priority."""
        level = self.priority(sc.call)
        if sc.level_slot == level:
            return
        if sc.level_slot >= 0:
            self.unfile(sc)
        bisect.insort(self.queues[level], (self.order(sc.call), sc))
        sc.level_slot = level

    def unfile(self, sc: SimCall) -> None:
        queue = self.queues[sc.level_slot]
        i = bisect.bisect_left(queue, (self.order(sc.call),))
        if i == len(queue) or queue[i][1] is not sc:
            raise RuntimeError(f"running call {sc.call!r} is not filed at priority {sc.level_slot}")
        del queue[i]
        sc.level_slot = -1

    def worst(self, m: int, keep: Callable[[SimCall], bool] | None = None) -> list[SimCall]:
        """The m worst running calls (only those `keep` accepts, asked worst first) in ascending rank
        order (best first)."""
        out: list[SimCall] = []
        if m <= 0:
            return out
        for queue in reversed(self.queues):
            for i in range(len(queue) - 1, -1, -1):
                if keep is not None and not keep(queue[i][1]):
                    continue
                out.append(queue[i][1])
                if len(out) == m:
                    out.reverse()
                    return out
        out.reverse()
        return out
