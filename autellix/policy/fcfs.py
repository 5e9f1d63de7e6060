"""FCFS: vLLM's default. One level, arrival order, no demotion, no starvation, no preemption."""

from __future__ import annotations

import math

from autellix.policy.config import PolicyConfig
from autellix.policy.levels import LevelPolicy
from autellix.programs import Call


class FCFS(LevelPolicy):
    name = "fcfs"
    program_aware = False

    def __init__(self, config: PolicyConfig | None = None) -> None:
        # FCFS ignores the level knobs: a single level that never demotes.
        base = config or PolicyConfig()
        super().__init__(base.replace(boundaries=(0, math.inf), quanta=None, starvation=False))


class ProgramFCFS(FCFS):
    """Program-level FCFS (Continuum's order): calls of the program that arrived first go first, so a
    program's later turns do not queue behind programs that started after it."""

    name = "pfcfs"

    def order(self, call: Call) -> tuple[float, int]:
        return (call.program.created, call.seq)
