"""Simulated engine settings. The systems the simulator runs (`--policy`) are policy/systems.py's table;
`continuum`'s TTL rule is parametrised here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autellix.sim.cost import CostModel

SWAP_MODES = ("batched", "per-block", "recompute")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """One simulated vLLM engine.

    Invariants (checked): max_num_seqs >= 1; max_batched_tokens > max_num_seqs, so a full decode batch
    always leaves room for prefill; swap in SWAP_MODES; 0 <= watermark < 1.
    """

    max_num_seqs: int = 256
    """Seats per step (vLLM's max_num_seqs; its V0 default)."""
    max_batched_tokens: int = 8192
    """Per-step token budget shared by decodes (1 each) and prefill chunks (chunked prefill)."""
    prefix_caching: bool = True
    swap: str = "batched"
    """Preemption: 'batched' = swap via one gathered copy (the paper's kernel), 'per-block' = one copy
    per block per layer (vLLM-style), 'recompute' = drop the KV and recompute it on resume."""
    swap_space_GB: float = 64.0
    """Host memory for swapped KV per engine (vLLM's swap_space; its 4 GiB default assumes preemption is
    rare, which priority scheduling makes false). When full, preemption falls back to recompute."""
    kv_offload: bool = False
    """Host tier for the prefix cache (vLLM's CPU KV offloading, LMCache): evicted blocks are copied to
    the swap pool, whose swapped calls come first, and a hit copies them back instead of recomputing."""
    watermark: float = 0.01
    """Fraction of GPU blocks kept free at admission (vLLM's watermark) so decodes rarely hit pressure."""
    gpu_blocks: int | None = None
    """Override the cost model's KV capacity (tests use small pools)."""
    cpu_blocks: int | None = None
    """Override the swap pool size in blocks."""
    request_overhead_s: float | None = None
    """Seconds from a call's issue to its arrival at the scheduler (client, HTTP, tokenisation; it delays
    the call like a short tool pause, without using the engine). None: the cost model's
    `request_overhead_s` (its calibration file's measurement; 0 for the GPU presets)."""
    fast_forward: bool = True
    """Advance many decode steps at once between events; False steps one at a time (reference)."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs: must be >= 1, got {self.max_num_seqs}")
        if self.max_batched_tokens <= self.max_num_seqs:
            raise ValueError(f"max_batched_tokens: must exceed max_num_seqs ({self.max_num_seqs}), got "
                             f"{self.max_batched_tokens}")
        if self.swap not in SWAP_MODES:
            raise ValueError(f"swap: unknown {self.swap!r}; choose one of {list(SWAP_MODES)}")
        if not 0 <= self.watermark < 1:
            raise ValueError(f"watermark: must be in [0, 1), got {self.watermark}")
        if self.request_overhead_s is not None and not self.request_overhead_s >= 0:
            raise ValueError(f"request_overhead_s: must be >= 0, got {self.request_overhead_s}")
        if self.swap_space_GB < 0:
            raise ValueError(f"swap_space_GB: must be >= 0, got {self.swap_space_GB}")

    def request_overhead(self, cost: CostModel) -> float:
        """The per-call request overhead in effect: this config's, else the cost model's."""
        return cost.request_overhead_s if self.request_overhead_s is None else self.request_overhead_s

    def replace(self, **changes: object) -> EngineConfig:
        return dataclasses.replace(self, **changes)
