"""Agent workloads as programs (DAGs of LLM calls) for the simulator and the real benchmark.

    from autellix.workloads import generate
    programs = generate("mixed", n_programs=1000, rate=2.0, seed=0)        # list[ProgramSpec]
    small = generate("chat", n_programs=50, rate=0.5, seed=0, scale=0.1)  # same structure, 10x fewer tokens

Every workload: Poisson program arrivals at `rate` programs/s; the same seed gives identical programs
(and, across rates, the same programs with arrival times scaled by 1/rate). Data comes from
shared/data (see `autellix.workloads.data`); docs/workloads.md describes sources, statistics and choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from autellix.workloads import agent_family, chat, coding, mixed, mooncake, react, tree_search
from autellix.workloads.spec import CallSpec, ProgramSpec, scale_program

__all__ = ["INTERACTIVE_PREFIX", "WORKLOADS", "CallSpec", "ProgramSpec", "generate", "interactive_stream",
           "parse_counts", "program_counts", "scale_program"]

_GENERATORS: dict[str, Callable[[int, float, int], list[ProgramSpec]]] = {
    "chat": chat.generate,
    "mooncake": mooncake.generate,
    "mooncake-trace": mooncake.generate_trace,
    "react": react.generate,
    "tree": tree_search.generate,
    "coding": coding.generate,
    "mixed": mixed.generate,
    **{name: agent_family.generator(name) for name in agent_family.FAMILY},
}
WORKLOADS: frozenset[str] = frozenset(_GENERATORS)
"""Registered workload names: chat, mooncake, mooncake-trace (the trace's own arrival times), react, tree,
coding, mixed, and the agent family agent-swe, agent-bigturn, agent-long, agent-mix."""


def generate(workload: str, n_programs: int, rate: float, seed: int = 0, scale: float = 1.0,
             draw: int | None = None) -> list[ProgramSpec]:
    """Programs of `workload`, arrivals a Poisson process at `rate` programs/s, reproducible from `seed`.

    `scale` multiplies every prompt and output token count (each stays >= 1, prefix relations kept), so a
    slow engine can run a workload with the same structure and smaller calls.
    `draw` (>= n_programs) draws that many programs and keeps the first n_programs (programs come in
    arrival order). The generators draw each quantity for all programs at once, so 20 programs are not
    the first 20 of 80; a sweep with a different count per rate passes its largest count as `draw` and
    every rate replays a prefix of the same draw (program_counts).
    Raises ValueError for an unknown workload, n_programs <= 0, draw < n_programs, rate <= 0 or scale <= 0.
    """
    if workload not in _GENERATORS:
        raise ValueError(f"unknown workload {workload!r}; valid workloads: {', '.join(sorted(WORKLOADS))}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if draw is not None and draw < n_programs:
        raise ValueError(f"draw ({draw}) must be >= n_programs ({n_programs})")
    programs = _GENERATORS[workload](draw or n_programs, rate, seed)[:n_programs]
    if scale != 1.0:
        programs = [scale_program(p, scale) for p in programs]
    return programs


INTERACTIVE_PREFIX = "i-"
"""Ids of an interactive stream's programs start with it, so they never collide with a fleet's."""


def interactive_stream(workload: str, n_programs: int, rate: float, seed: int = 0,
                       scale: float = 1.0) -> list[ProgramSpec]:
    """The interactive stream beside a batch fleet drawn from `seed` (`autellix sim` and `autellix bench`
    with `--interactive`): its own draw (seed + 1, so it is not the fleet's first programs), arrivals a
    Poisson process at `rate` counted from the stream's start, ids prefixed INTERACTIVE_PREFIX."""
    programs = generate(workload, n_programs, rate, seed + 1, scale)
    return [p.retimed(p.arrival, f"{INTERACTIVE_PREFIX}{p.program_id}") for p in programs]


def program_counts(programs: int | Sequence[int], n_rates: int) -> tuple[int, ...]:
    """Programs per rate point of a sweep: one N for every rate, or exactly one count per rate (in the
    order the rates were given). A sweep's low-load point only sets the latency scale, while its loaded
    points need many programs to get past the start-up transient, so a fixed time budget is better spent
    unevenly (docs/bench.md, "Planning a sweep"). Raises ValueError for a count < 1 or a length mismatch."""
    counts = (programs,) * n_rates if isinstance(programs, int) else tuple(programs)
    if len(counts) != n_rates:
        raise ValueError(f"--programs: give one count or one per rate ({n_rates}), got {len(counts)}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
        raise ValueError(f"--programs: every count must be an integer >= 1, got {list(counts)}")
    return counts


def parse_counts(text: str) -> int | tuple[int, ...]:
    """'30' -> 30; '20,30,80' -> (20, 30, 80): the `--programs` option of `autellix sim` and `bench`."""
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        values = ()
    if not values:
        raise ValueError(f"--programs: expected N or N1,N2,... (one per rate), got {text!r}")
    return values[0] if len(values) == 1 else values
