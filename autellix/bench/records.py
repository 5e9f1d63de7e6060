"""Per-call and per-program records of a real-engine replay (written to the JSON as `calls` / `programs`).

Times are seconds from the start of the (target, rate) run; token counts are what the engine reported
(`completion_tokens`, `engine_prompt_tokens`) next to what the workload intended (`prompt_tokens`,
`output_tokens`) and what the client's tokenizer counted in the prompt it sent (`sent_prompt_tokens`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CallRecord:
    """One issued call. Invariant: `error` is None exactly when `ttft` and `latency` are set."""

    target: str
    rate: float
    program: str
    thread: int
    call: int
    role: str
    prompt_tokens: int
    output_tokens: int
    sent_prompt_tokens: int
    engine_prompt_tokens: int | None
    completion_tokens: int
    issued: float
    ttft: float | None
    latency: float | None
    clipped: bool = False
    error: str | None = None
    cached_tokens: int | None = None
    """Prompt tokens served from the engine's prefix cache, when it reports them."""

    @property
    def hit_tokens(self) -> int:
        """What metrics.closed_loop reads as the prefix-cache hit (0 when the engine did not say)."""
        return self.cached_tokens or 0

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first (None for failed or one-token calls)."""
        if self.latency is None or self.ttft is None or self.completion_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.completion_tokens - 1)

    @property
    def finished(self) -> float | None:
        """When its last token came (the run's clock), None for a failed call."""
        return None if self.latency is None else self.issued + self.latency

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"tpot": self.tpot}


@dataclass(frozen=True)
class ProgramRecord:
    """One program. `finish` is None when any of its calls failed or was skipped (`error` says why)."""

    target: str
    rate: float
    program: str
    kind: str
    threads: int
    calls: int
    arrival: float
    finish: float | None
    output_tokens: int
    error: str | None = None
    batch: bool = False
    """Its class: True for a batch fleet's program beside an interactive stream (metrics.mixed_closed_loop
    splits the classes on it), False otherwise (interactive, the default)."""

    @property
    def ok(self) -> bool:
        return self.finish is not None and self.error is None

    @property
    def jct(self) -> float | None:
        """Program completion time: arrival to its last call's last token (critical path if parallel)."""
        return None if self.finish is None else self.finish - self.arrival

    @property
    def latency(self) -> float | None:
        """Seconds per generated token: JCT / all output tokens (metrics.py; docs/bench.md)."""
        jct = self.jct
        return None if jct is None or self.output_tokens <= 0 else jct / self.output_tokens

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"jct": self.jct, "latency": self.latency}
