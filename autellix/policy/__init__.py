"""Scheduling policies behind one interface (see base.Policy); pure Python, no engine imports."""

from __future__ import annotations

from autellix.policy.base import Batch, Budget, Policy, SeatBudget
from autellix.policy.config import ConfigError, PolicyConfig
from autellix.policy.fcfs import FCFS, ProgramFCFS
from autellix.policy.levels import LevelPolicy
from autellix.policy.mlfq import MLFQ
from autellix.policy.plas import ATLAS, PLAS, Autellix
from autellix.policy.srpt import SRPT

POLICIES: dict[str, type[Policy]] = {
    "fcfs": FCFS, "pfcfs": ProgramFCFS, "mlfq": MLFQ, "plas": PLAS, "atlas": ATLAS, "autellix": Autellix,
    "srpt": SRPT,
}


def make_policy(name: str, config: PolicyConfig | None = None) -> Policy:
    """Build a policy by name; unknown names raise a ConfigError listing the valid ones."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ConfigError(f"policy: unknown {name!r}; choose one of {sorted(POLICIES)}") from None
    return cls(config)


__all__ = ["ATLAS", "Autellix", "Batch", "Budget", "ConfigError", "FCFS", "LevelPolicy", "MLFQ", "PLAS",
           "POLICIES", "ProgramFCFS", "Policy", "PolicyConfig", "SRPT", "SeatBudget", "make_policy"]
