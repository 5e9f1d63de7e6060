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

    def add(self, other: EngineStats) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
