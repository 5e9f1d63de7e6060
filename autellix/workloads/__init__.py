"""Agent workloads as programs (DAGs of LLM calls) for the simulator and the real benchmark.

    from autellix.workloads import generate
    programs = generate("mixed", n_programs=1000, rate=2.0, seed=0)            # list[ProgramSpec]
    small = generate("chat", n_programs=50, rate=0.5, seed=0, scale=0.1)      # same structure, 10x fewer tokens

Every workload: Poisson program arrivals at `rate` programs/s; the same seed gives identical programs
(and, across rates, the same programs with arrival times scaled by 1/rate). Data comes from
shared/data (see `autellix.workloads.data`); docs/workloads.md describes sources, statistics and choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from autellix.workloads import chat, coding, mixed, mooncake, react, tree_search
from autellix.workloads.spec import CallSpec, ProgramSpec, scale_program

__all__ = ["WORKLOADS", "CallSpec", "ProgramSpec", "generate", "scale_program"]

_GENERATORS: dict[str, Callable[[int, float, int], list[ProgramSpec]]] = {
    "chat": chat.generate,
    "mooncake": mooncake.generate,
    "react": react.generate,
    "tree": tree_search.generate,
    "coding": coding.generate,
    "mixed": mixed.generate,
}
WORKLOADS: frozenset[str] = frozenset(_GENERATORS)
"""Registered workload names: chat, mooncake, react, tree, coding, mixed."""


def generate(workload: str, n_programs: int, rate: float, seed: int = 0, scale: float = 1.0) -> list[ProgramSpec]:
    """Programs of `workload`, arrivals a Poisson process at `rate` programs/s, reproducible from `seed`.

    `scale` multiplies every prompt and output token count (each stays >= 1, prefix relations kept), so a
    slow engine can run a workload with the same structure and smaller calls.
    Raises ValueError for an unknown workload, n_programs <= 0, rate <= 0 or scale <= 0.
    """
    if workload not in _GENERATORS:
        raise ValueError(f"unknown workload {workload!r}; valid workloads: {', '.join(sorted(WORKLOADS))}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    programs = _GENERATORS[workload](n_programs, rate, seed)
    if scale != 1.0:
        programs = [scale_program(p, scale) for p in programs]
    return programs
