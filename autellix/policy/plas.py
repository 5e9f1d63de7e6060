"""PLAS and ATLAS: program-level attained service (Autellix, docs/policy.md, 'Rules', 1-2).

Both enter a call at the level of its program's attained service (`Call.start_service`), not at level 0
as MLFQ does, and both update the table by the same rule on completion (`PolicyConfig.service_rule`, see
programs.py: by default every call's service adds up; `critical_path` is the paper's max rule). ATLAS
also gang-schedules: a program's active calls share one level, the worst any of them has reached, so the
parallel branches of one program advance together.
"""

from __future__ import annotations

from autellix.policy.levels import LevelPolicy


class PLAS(LevelPolicy):
    """Program-Level Attained Service, for single-threaded programs."""

    name = "plas"


class ATLAS(LevelPolicy):
    """Adaptive Thread-Level Attained Service, for multi-threaded programs."""

    name = "atlas"
    gang = True
    # Gang moves touch every active call of a program, so one ATLAS instance must own all of them:
    # engines that share Program objects (a cluster) each need their own engine-local table.


class Autellix(ATLAS):
    """PLAS for single-threaded programs, ATLAS for multi-threaded ones.

    The two differ only in gang leveling, which is a no-op for a program with one active call, so
    applying ATLAS everywhere is exactly "PLAS where sequential, ATLAS where parallel".
    """

    name = "autellix"
