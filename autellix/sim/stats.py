"""Counters one simulated engine keeps (reported per run; they never drive decisions)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class EngineStats:
    steps: int = 0
    busy_s: float = 0.0
    prefill_tokens: int = 0
    """Prompt tokens computed (cache misses and recomputation), not cache hits."""
    priority_preemptions: int = 0
    pressure_preemptions: int = 0
    recompute_preemptions: int = 0
    swap_outs: int = 0
    swap_out_blocks: int = 0
    swap_in_blocks: int = 0
    offload_out_blocks: int = 0
    """Prefix-cache blocks copied to the host tier on eviction (EngineConfig.kv_offload)."""
    offload_in_blocks: int = 0
    """Prefix-cache blocks a hit copied back from the host tier instead of recomputing them."""
    holds_granted: int = 0
    """KV residency (policy/residency.py): holds taken, ended at their deadline, released for memory
    (before a refusal or preemption) and for the held-share cap; programs that waited at the gate, and
    resident programs paused at a tool boundary. Whole-run counts."""
    holds_expired: int = 0
    holds_released_pressure: int = 0
    holds_released_cap: int = 0
    programs_gated: int = 0
    programs_paused: int = 0

    def add(self, other: EngineStats) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def add_residency(self, counters: object) -> None:
        """Take the residency policy's counters (their names are fields here)."""
        for key, value in asdict(counters).items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
