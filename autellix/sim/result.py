"""What one simulation run produced: per-program and per-call outcomes plus engine counters.

Outcomes expose `latency` / `jct` (programs) and `ttft` / `tpot` (calls), the names autellix.metrics reads,
so simulated and real runs are summarised by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autellix.metrics import Summary, summarize
from autellix.sim.stats import EngineStats


@dataclass(frozen=True, slots=True)
class ProgramOutcome:
    program: str
    kind: str
    threads: int
    calls: int
    arrival: float
    finish: float
    output_tokens: int
    batch: bool = False
    """The program's class (a batch fleet beside an interactive stream; else False)."""

    @property
    def jct(self) -> float:
        return self.finish - self.arrival

    @property
    def latency(self) -> float:
        return (self.finish - self.arrival) / self.output_tokens


@dataclass(frozen=True, slots=True)
class SimCallOutcome:
    """One simulated call's timeline and KV figures (a finished call of SimResult)."""

    program: str
    index: int
    engine: int
    issued: float
    first_token: float
    finished: float
    prompt_tokens: int
    output_tokens: int
    hit_tokens: int
    wait: float
    """Seconds spent in the engine's waiting queue (before admission and after preemptions)."""
    preemptions: int
    swaps: int
    prefill_tokens: int = 0
    """Prompt tokens computed for this call (misses and recomputation)."""
    new_prompt_tokens: int = 0
    """What an infinite prefix cache would have computed: the prompt beyond the prefix call's history."""

    @property
    def ttft(self) -> float:
        return self.first_token - self.issued

    @property
    def tpot(self) -> float | None:
        if self.output_tokens < 2:
            return None
        return (self.finished - self.first_token) / (self.output_tokens - 1)


@dataclass(slots=True)
class SimResult:
    policy: str
    programs: list[ProgramOutcome]
    calls: list[SimCallOutcome]
    engines: list[EngineStats] = field(default_factory=list)
    wall_s: float = 0.0
    events: int = 0

    @property
    def end(self) -> float:
        return max((p.finish for p in self.programs), default=0.0)

    def summary(self) -> Summary:
        return summarize(self.programs, self.calls)

    def totals(self) -> EngineStats:
        total = EngineStats()
        for s in self.engines:
            total.add(s)
        return total
