"""MLFQ (FastServe-style): every call enters level 0 and is demoted by quanta; program-agnostic."""

from __future__ import annotations

from autellix.policy.levels import LevelPolicy


class MLFQ(LevelPolicy):
    name = "mlfq"
    program_aware = False
