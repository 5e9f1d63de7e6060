"""PluginHolds: the policy core's KV holds carried out on vLLM's block pool (issue "residency inside vLLM").

vLLM V1 frees a finished request's blocks at once: with prefix caching its full blocks stay cached but
evictable (plain LRU), so an agent in a two-second tool call can lose its history to another program.
A hold keeps it: `ResidencyPolicy` (policy/residency.py) decides whether and for how long; this class
takes one reference on the finished request's cached (hashed, non-null) blocks with `BlockPool.touch`
before vLLM frees them, and gives it back with `BlockPool.free_blocks` when the hold ends:
- the program's next call is admitted (vLLM's prefix lookup has taken its own references by then),
- the deadline passes (checked at the top of every `schedule()`),
- memory is short: vLLM's `KVCacheManager.allocate_slots` returned None, which is exactly where vLLM
  would refuse a waiting request or preempt a running one. The wrapper releases the lowest-value hold
  and retries (a failed `allocate_slots` changes nothing but an idempotent sliding-window trim), so a
  hold never refuses a call or causes a preemption. Wrapping the allocation, rather than estimating free
  blocks at the top of `schedule()`, is exact: it acts only when vLLM itself found memory short,
- the held share passes `hold_cap`, the prefix cache is reset, or the program ends.
A released hold's blocks go back as ordinary cached blocks (ref 0, in the free queue, hash kept): a later
prefix lookup still finds them until they are evicted.

Invariant: every block in `blocks[key]` carries exactly one reference of ours for each live hold that
lists it, and nothing else of ours: `release_all()` returns the pool to vLLM's own accounting.
"""

from __future__ import annotations

import time
from typing import Any

from autellix.policy.residency import Hold, ResidencyPolicy


class PluginHolds:
    def __init__(self, policy: ResidencyPolicy, kv_cache_manager: Any) -> None:
        self.policy = policy
        self.manager = kv_cache_manager
        self.pool = kv_cache_manager.block_pool
        self.blocks: dict[str, list[Any]] = {}
        """hold key (the finished request's id) -> the blocks we reference."""
        self.held = 0
        allocate = kv_cache_manager.allocate_slots

        def allocate_slots(*args: Any, **kwargs: Any) -> Any:
            out = allocate(*args, **kwargs)
            while out is None and self.release_one():
                out = allocate(*args, **kwargs)
            return out

        kv_cache_manager.allocate_slots = allocate_slots

    def arrive(self, program_id: str) -> None:
        self.policy.arrive(program_id, time.monotonic())

    def finished(self, request_id: str, program_id: str, num_tokens: int) -> None:
        """A request of a live program is about to be freed: hold its cached blocks if the policy says so."""
        blocks = [b for group in self.manager.get_blocks(request_id).blocks for b in group
                  if b.block_hash is not None and not b.is_null]
        now = time.monotonic()
        hold = self.policy.finished(program_id, request_id, len(blocks), num_tokens, now)
        if hold is None:
            return
        self.pool.touch(blocks)
        self.blocks[request_id] = blocks
        self.held += len(blocks)
        for old in self.policy.over_cap(self.held, now):
            self._give_back(old)

    def admitted(self, program_id: str) -> None:
        """A call of the program was scheduled: it references its history itself now."""
        for hold in self.policy.drop(program_id):
            self._give_back(hold)

    def expire(self) -> None:
        for hold in self.policy.expired(time.monotonic()):
            self._give_back(hold)

    def release_one(self) -> bool:
        """Memory is short: give back the lowest-value hold; False when there is none."""
        holds = self.policy.by_value(time.monotonic())
        if not holds:
            return False
        self.policy.release(holds[0])
        self.policy.note_pressure(1)
        self._give_back(holds[0])
        return True

    def end(self, program_id: str) -> None:
        for hold in self.policy.end(program_id):
            self._give_back(hold)

    def release_all(self) -> None:
        for key in list(self.blocks):
            hold = self.policy.take(key)
            if hold is not None:
                self._give_back(hold)

    def _give_back(self, hold: Hold) -> None:
        blocks = self.blocks.pop(hold.key)
        self.held -= len(blocks)
        self.pool.free_blocks(blocks)
