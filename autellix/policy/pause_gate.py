"""PauseGate: ThunderAgent's program scheduler, the `thunderagent` baseline (a proxy in front of stock vLLM).

Published rule (Kang et al., "ThunderAgent: A Simple, Fast and Program-Aware Agentic Inference System",
arXiv 2602.13692, 2026; also ported as Dynamo's thunderagent_router): programs, not calls, are scheduled
at the proxy, with no engine change. Each program's working set is its context (tokens). Programs are
ACTIVE (counted, their calls go to the engine) or PAUSED (their next call waits at the proxy and the
engine may evict their KV). On every change (a call ends, a program arrives or ends) the proxy checks
memory: while the active working sets exceed `threshold` x the KV capacity it pauses *acting* programs
(in a tool call, none of their calls running), shortest context first (the cheapest to recompute, their
"shortest-first eviction"); while there is room it resumes paused programs, smallest context first,
packing them under the threshold. A new program starts paused with its first prompt as its context.
One program is always let in when none is active, so a program larger than the threshold still runs.

Invariant: `usage` == sum of the contexts of active programs; a running program is never paused.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Program:
    tokens: int
    active: bool = False
    running: int = 0
    """Calls of this program in flight at the engine."""


class PauseGate:
    def __init__(self, capacity_tokens: float, threshold: float) -> None:
        if not threshold > 0:
            raise ValueError(f"PauseGate: need threshold > 0, got {threshold}")
        self.threshold = threshold
        self.limit = 0.0
        self.set_capacity(capacity_tokens)
        self.programs: dict[str, _Program] = {}
        self.usage = 0
        self.pauses = 0

    def set_capacity(self, capacity_tokens: float) -> None:
        """The KV capacity (tokens; `math.inf`: not known yet, nothing waits) changed; the next
        `rebalance` applies it."""
        if not capacity_tokens > 0:
            raise ValueError(f"PauseGate: need capacity > 0, got {capacity_tokens}")
        self.limit = self.threshold * capacity_tokens

    def active(self, program_id: str) -> bool:
        p = self.programs.get(program_id)
        return p is not None and p.active

    def arrive(self, program_id: str, tokens: int) -> None:
        """A new program (paused until `rebalance` lets it in)."""
        self.programs[program_id] = _Program(tokens)

    def started(self, program_id: str, prompt_tokens: int) -> None:
        """A call of an active program went to the engine."""
        p = self.programs[program_id]
        p.running += 1
        self._resize(p, prompt_tokens)

    def finished(self, program_id: str, context_tokens: int) -> None:
        p = self.programs[program_id]
        p.running -= 1
        self._resize(p, context_tokens)

    def end(self, program_id: str) -> None:
        p = self.programs.pop(program_id)
        if p.active:
            self.usage -= p.tokens

    def rebalance(self) -> list[str]:
        """Pause acting programs while over the limit, then resume paused ones that fit; returns the
        programs resumed (their waiting calls may go)."""
        if self.usage > self.limit:
            acting = sorted((p.tokens, pid) for pid, p in self.programs.items() if p.active and not p.running)
            for tokens, pid in acting:
                if self.usage <= self.limit:
                    break
                self.programs[pid].active = False
                self.usage -= tokens
                self.pauses += 1
            return []
        resumed = []
        for tokens, pid in sorted((p.tokens, pid) for pid, p in self.programs.items() if not p.active):
            if self.usage and self.usage + tokens > self.limit:
                break
            self.programs[pid].active = True
            self.usage += tokens
            resumed.append(pid)
        return resumed

    def _resize(self, p: _Program, tokens: int) -> None:
        if p.active:
            self.usage += tokens - p.tokens
        p.tokens = tokens
