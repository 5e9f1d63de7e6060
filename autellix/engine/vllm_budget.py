"""EngineBudget: seats and free KV blocks of a vLLM scheduler, as the policy's `Budget` protocol sees them
(the plugin's preemption check, vllm.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm.v1.request import RequestStatus

from autellix.programs import Call

SCHEDULABLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


class EngineBudget:
    """Seats (max_num_seqs) and free KV blocks, as the policy's `Budget` protocol sees them.

    Estimates: a waiting call needs blocks for its whole sequence (no prefix-cache credit, so this errs
    towards preempting under KV pressure); a preempted running call frees the blocks of its computed
    tokens; held blocks count as free (a hold gives way before any preemption for memory). A call vLLM
    cannot schedule now (blocked on grammar or a KV transfer, or parked at the program gate) costs
    nothing, and a call larger than the whole cache is left to vLLM (preempting for it could never help)."""

    __slots__ = ("tracks", "seats", "used", "free", "capacity", "block_size", "parked")

    def __init__(self, tracks: dict[Call, Any], seats: int, used: int, free: int, capacity: int,
                 block_size: int, parked: Callable[[Any], bool]) -> None:
        self.tracks, self.seats, self.used = tracks, seats, used
        self.free, self.capacity, self.block_size = free, capacity, block_size
        self.parked = parked

    def _need(self, call: Call) -> int:
        request = self.tracks[call].request
        if request.status not in SCHEDULABLE or self.parked(request):
            return -1
        need = -(-(request.num_tokens + 1) // self.block_size)
        return -1 if need > self.capacity else need

    def fits(self, call: Call) -> bool:
        need = self._need(call)
        return need < 0 or (self.used < self.seats and need <= self.free)

    def reserve(self, call: Call) -> None:
        need = self._need(call)
        if need >= 0:
            self.used += 1
            self.free -= need

    def release(self, call: Call) -> None:
        self.used -= 1
        self.free += -(-self.tracks[call].request.num_computed_tokens // self.block_size)
