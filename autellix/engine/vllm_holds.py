"""PluginHolds: the policy core's KV residency carried out inside vLLM: holds on its block pool, the
program gate in its waiting queue (issue "residency inside vLLM"; the simulator's twin is sim/holding.py).

Holds. vLLM V1 frees a finished request's blocks at once: with prefix caching its full blocks stay cached
but evictable (plain LRU), so an agent in a two-second tool call can lose its history to another program.
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
prefix lookup still finds them until they are evicted. An ended program's go to the front of the free
queue (evicted before any other cached block: it will not be back).

The gate (`ProgramGate`, policy/admission.py; only while holds fail). A call of a program that is not
resident here is *parked* in vLLM's waiting queue (LevelQueue.park): counted as waiting, invisible to the
schedule loop. At the top of every `schedule()` parked programs are admitted first come first served
(the first whatever the working sets say when the engine has nothing else to run), and resident programs
over the limit at a tool boundary are paused. A resident program's working set is its latest context in
blocks: its call's prompt once scheduled, prompt + output once finished. A call's first scheduling tells
the gate how much of the history its program's hold covered was still cached (the thrash signal).

Invariants: every block in `blocks[key]` carries exactly one reference of ours for each live hold that
lists it, and nothing else of ours: `release_all()` returns the pool to vLLM's own accounting. `parked`
lists exactly the requests parked in `queue`, by program in arrival order, and only programs that are
not resident.
"""

from __future__ import annotations

import time
from typing import Any

from autellix.engine.compat import free_blocks_evict_first
from autellix.engine.vllm_queue import LevelQueue
from autellix.policy.residency import Hold, ResidencyPolicy


class PluginHolds:
    def __init__(self, policy: ResidencyPolicy, kv_cache_manager: Any, block_size: int) -> None:
        self.policy = policy
        self.gate = policy.gate
        self.manager = kv_cache_manager
        self.pool = kv_cache_manager.block_pool
        self.block_size = block_size
        self.blocks: dict[str, list[Any]] = {}
        """hold key (the finished request's id) -> the blocks we reference."""
        self.held = 0
        self.expected: dict[str, int] = {}
        """program -> tokens of history its hold covered (what its next call expects cached)."""
        self.parked: dict[str, list[Any]] = {}
        self.parked_batch: dict[str, bool] = {}
        """Parked program -> its class (the gate admits interactive and batch programs apart)."""
        allocate = kv_cache_manager.allocate_slots

        def allocate_slots(*args: Any, **kwargs: Any) -> Any:
            out = allocate(*args, **kwargs)
            while out is None and self.release_one():
                out = allocate(*args, **kwargs)
            return out

        kv_cache_manager.allocate_slots = allocate_slots

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # -- the gate --------------------------------------------------------------------------------------

    def arrive(self, program_id: str, request: Any, queue: LevelQueue, batch: bool = False) -> None:
        """A call of the program (`batch`: of the batch class) was queued (in `queue`): parked unless
        the program is resident or, while batch programs are, interactive (ProgramGate.admit)."""
        self.policy.arrive(program_id, time.monotonic())
        gate = self.gate
        if gate is None:
            return
        blocks = self._blocks(request.num_tokens)
        if (self.parked and not gate.passes(batch)) or not gate.admit(program_id, blocks, batch=batch):
            if not gate.admitted(program_id) and queue.park(request):  # FCFS among the parked
                if program_id not in self.parked:
                    self.policy.counters.programs_gated += 1
                    self.parked_batch[program_id] = batch
                self.parked.setdefault(program_id, []).append(request)
                return
        gate.started(program_id)

    def admit_parked(self, queue: LevelQueue, idle: bool) -> None:
        """Parked programs the gate lets in now, first come first served; their calls become runnable."""
        gate, parked = self.gate, self.parked
        while parked:
            program_id, requests = next(iter(parked.items()))
            blocks = self._blocks(max(r.num_tokens for r in requests))
            if not gate.admit(program_id, blocks, idle, self.parked_batch[program_id]):
                return
            idle = False
            del parked[program_id]
            del self.parked_batch[program_id]
            for request in requests:
                queue.unpark(request)
                gate.started(program_id)

    def scheduled(self, program_id: str, prompt_tokens: int, hit_tokens: int | None) -> None:
        """A call of the program was scheduled (`hit_tokens`: its prefix-cache hit when newly scheduled,
        None when resumed): it references its history itself now, so the program's holds end."""
        for hold in self.policy.drop(program_id):
            self._give_back(hold)
        gate = self.gate
        if gate is not None:
            gate.grow(program_id, self._blocks(prompt_tokens))
            expected = self.expected.pop(program_id, 0)
            if hit_tokens is not None and expected:
                gate.observe(program_id, expected, min(hit_tokens, expected))

    def unqueued(self, program_id: str, request: Any) -> None:
        """The request left before it ran (an abort): forget it if it was parked."""
        requests = self.parked.get(program_id)
        if requests and request in requests:
            requests.remove(request)
            if not requests:
                del self.parked[program_id]
                del self.parked_batch[program_id]

    # -- holds -----------------------------------------------------------------------------------------

    def finished(self, request_id: str, program_id: str, num_tokens: int, batch: bool = False) -> None:
        """A request of a live program (`batch`: of the batch class) is about to be freed: hold its
        cached blocks if the policy says so."""
        blocks = [b for group in self.manager.get_blocks(request_id).blocks for b in group
                  if b.block_hash is not None and not b.is_null]
        now = time.monotonic()
        hold = self.policy.finished(program_id, request_id, len(blocks), num_tokens, now, batch)
        if self.gate is not None:
            self.gate.grow(program_id, self._blocks(num_tokens))
        if hold is None:
            return
        self.pool.touch(blocks)
        self.blocks[request_id] = blocks
        self.held += len(blocks)
        self.expected[program_id] = len(blocks) * self.block_size
        for old in self.policy.over_cap(self.held, now):
            self._give_back(old)

    def expire(self) -> None:
        """Expired holds go; programs over the working-set limit at a tool boundary are paused."""
        now = time.monotonic()
        for hold in self.policy.expired(now):
            self._give_back(hold)
        for hold in self.policy.pause():
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
        """The program ended: its holds go, evicted first; it leaves the gate."""
        self.expected.pop(program_id, None)
        for hold in self.policy.end(program_id):
            self._give_back(hold, evict_first=True)

    def release_all(self) -> None:
        for key in list(self.blocks):
            hold = self.policy.take(key)
            if hold is not None:
                self._give_back(hold)

    def _give_back(self, hold: Hold, evict_first: bool = False) -> None:
        blocks = self.blocks.pop(hold.key)
        self.held -= len(blocks)
        if evict_first:
            free_blocks_evict_first(self.pool, blocks)
        else:
            self.pool.free_blocks(blocks)
