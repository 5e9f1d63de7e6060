"""KV-cache blocks of one engine: a GPU pool with a per-program prefix cache, and a CPU swap pool.

Blocks are counted, not named. A call's context is a *chain* of segments followed by its own segment:
each segment is the run of full blocks that one call contributed to a program's history (its prompt's
new part and its output). A later call whose prompt extends call p's prompt + output shares p's chain and
p's segment (only full blocks are shareable, as in vLLM's block hashing). Segment keys are arbitrary
hashable objects (the simulator uses its per-call records).

GPU block states, and the invariant this class keeps:
    free + evictable + pinned + private == gpu_blocks
- free:      unused.
- evictable: cached blocks of segments no running call uses (refs == 0), in LRU order; they count as
             available, and `alloc` evicts them oldest-first (a segment loses its tail blocks first).
- pinned:    cached blocks of segments some running call uses (refs > 0); never evicted.
- private:   blocks owned by running calls outside the cache (their own growing segment and tail).
`free` never goes negative: callers check `available()` first (the engine's Budget does).

Host tier (`offload`, vLLM's CPU KV offloading / LMCache): blocks evicted from the GPU are copied to the
CPU pool instead of being dropped, and a later hit copies them back instead of recomputing them. The CPU
pool is shared with swapped-out calls, which come first: cached copies are dropped, whole segments in LRU
order, to make room. Invariants: a segment's host blocks are the run directly after its GPU-resident
leading blocks (eviction takes tail blocks first, so each eviction extends that run downward);
cpu_used + host_used <= cpu_blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

View = tuple[Hashable, int]
"""(segment key, number of its leading blocks used by a chain)."""


class KVCache:
    """GPU blocks with an LRU prefix cache over segments, plus a CPU swap pool (counts only)."""

    __slots__ = ("gpu_blocks", "cpu_blocks", "cpu_used", "caching", "free", "evictable",
                 "cached", "refs", "lru", "evicted", "offload", "host", "host_used", "offloaded")

    def __init__(self, gpu_blocks: int, cpu_blocks: int, caching: bool = True,
                 offload: bool = False) -> None:
        if gpu_blocks <= 0 or cpu_blocks < 0:
            raise ValueError(f"KV pools: need gpu_blocks > 0 and cpu_blocks >= 0, got {gpu_blocks}, "
                             f"{cpu_blocks}")
        self.gpu_blocks = gpu_blocks
        self.cpu_blocks = cpu_blocks
        self.cpu_used = 0
        self.caching = caching
        self.free = gpu_blocks
        self.evictable = 0
        self.cached: dict[Hashable, int] = {}
        """segment -> resident leading blocks (> 0)."""
        self.refs: dict[Hashable, int] = {}
        """segment -> running calls that pin it (> 0)."""
        self.lru: OrderedDict[Hashable, None] = OrderedDict()
        """Evictable segments (refs == 0, cached > 0), least recently used first."""
        self.evicted = 0
        self.offload = offload and caching
        self.host: OrderedDict[Hashable, int] = OrderedDict()
        """segment -> blocks cached in host memory (> 0), least recently stored first."""
        self.host_used = 0
        self.offloaded = 0
        """Blocks copied to the host tier so far (stores are asynchronous in vLLM: not charged)."""

    # -- capacity ------------------------------------------------------------------------------------

    def available(self) -> int:
        """Blocks an allocation can get: free ones plus evictable cached ones."""
        return self.free + self.evictable

    def alloc(self, n: int) -> None:
        """Take n blocks, evicting LRU cached segments (tail blocks first) when free ones run out."""
        if n <= self.free:
            self.free -= n
            return
        need = n - self.free
        self.free = 0
        lru, cached = self.lru, self.cached
        while need:
            seg = next(iter(lru))
            have = cached[seg]
            take = have if have <= need else need
            need -= take
            self.evictable -= take
            self.evicted += take
            if take == have:
                del cached[seg]
                del lru[seg]
            else:
                cached[seg] = have - take
            if self.offload:
                self._store(seg, take)

    def release(self, n: int) -> None:
        self.free += n

    # -- prefix cache --------------------------------------------------------------------------------

    def hit_blocks(self, chain: Sequence[View]) -> int:
        """Leading blocks of `chain` resident on the GPU, or in the host tier (a hit stops at the first
        block in neither)."""
        hit = 0
        cached, host = self.cached, self.host
        for seg, n in chain:
            have = cached.get(seg, 0)
            if have < n and host:
                have += host.get(seg, 0)
            if have < n:
                return hit + have
            hit += n
        return hit

    def host_hit_blocks(self, chain: Sequence[View], blocks: int) -> int:
        """How many of the first `blocks` blocks of `chain` a hit takes from the host tier."""
        copied = 0
        cached = self.cached
        for seg, n in chain:
            if blocks <= 0:
                break
            on_gpu = cached.get(seg, 0)
            used = min(n, blocks)
            copied += max(used - on_gpu, 0)
            blocks -= n
        return copied

    def admission_blocks(self, chain: Sequence[View]) -> int:
        """How much `available()` drops when `pin(chain)` runs: missing blocks it allocates plus
        resident evictable blocks it pins. Exact for one call; an upper bound across several calls
        that share segments (they would pin the same blocks once)."""
        cost = 0
        cached, refs = self.cached, self.refs
        for seg, n in chain:
            have = cached.get(seg, 0)
            if have < n:
                cost += n - have
            if seg not in refs:
                cost += have
        return cost

    def pin(self, chain: Sequence[View]) -> int:
        """A running call starts using `chain`: pin every segment and make all its blocks resident.
        Returns the number of blocks that were missing (the caller recomputes or copies them in)."""
        cached, refs, lru = self.cached, self.refs, self.lru
        missing = 0
        for seg, n in chain:  # pin first, so the allocation below cannot evict this chain
            r = refs.get(seg, 0)
            if r == 0 and seg in lru:
                del lru[seg]
                self.evictable -= cached[seg]
            refs[seg] = r + 1
        for seg, n in chain:
            have = cached.get(seg, 0)
            if have < n:
                missing += n - have
                cached[seg] = n
                self._drop_host(seg)  # its blocks are on the GPU again (copied back or recomputed)
        if missing:
            self.alloc(missing)
        return missing

    def unpin(self, chain: Sequence[View]) -> None:
        """A running call stops using `chain`. Unused segments become evictable; the chain is touched
        leaf first, so the root is the most recently used and the leaves are evicted first."""
        cached, refs, lru = self.cached, self.refs, self.lru
        for i in range(len(chain) - 1, -1, -1):
            seg = chain[i][0]
            r = refs[seg] - 1
            if r:
                refs[seg] = r
                continue
            del refs[seg]
            have = cached.get(seg, 0)
            if have:
                lru[seg] = None
                self.evictable += have

    def take_own(self, seg: Hashable) -> int:
        """A call resumes: its own cached segment (if any) leaves the cache and becomes private again.
        Returns its resident blocks, which the caller counts as already allocated."""
        self._drop_host(seg)
        have = self.cached.pop(seg, 0)
        if have and seg not in self.refs:
            del self.lru[seg]
            self.evictable -= have
        return have

    def put_own(self, seg: Hashable, blocks: int) -> None:
        """A call's private full blocks become a cached, evictable segment (most recently used)."""
        self._drop_host(seg)
        if blocks > 0:
            self.cached[seg] = blocks
            self.lru[seg] = None
            self.evictable += blocks

    def own_resident(self, seg: Hashable) -> int:
        return self.cached.get(seg, 0)

    def pinned(self) -> int:
        return sum(self.cached.get(seg, 0) for seg in self.refs)

    # -- swap pool -----------------------------------------------------------------------------------

    def cpu_free(self) -> int:
        """CPU blocks a swap-out can get: host-tier copies give way to swapped calls."""
        return self.cpu_blocks - self.cpu_used

    def reserve_cpu(self, n: int) -> None:
        """Take n CPU blocks for a swapped-out call (n <= cpu_free()), dropping host-tier copies."""
        self._host_room(n)
        self.cpu_used += n

    # -- host tier -----------------------------------------------------------------------------------

    def _store(self, seg: Hashable, n: int) -> None:
        """n tail blocks of `seg` were evicted from the GPU: keep a copy on the host if it fits."""
        if n > self.cpu_blocks - self.cpu_used:
            self._drop_host(seg)  # the run after the GPU blocks would have a gap
            return
        self._host_room(n)
        host = self.host
        host[seg] = host.pop(seg, 0) + n
        self.host_used += n
        self.offloaded += n

    def _host_room(self, n: int) -> None:
        """Drop least recently stored host copies until n CPU blocks are free."""
        host = self.host
        while self.cpu_blocks - self.cpu_used - self.host_used < n:
            _, blocks = host.popitem(last=False)
            self.host_used -= blocks

    def _drop_host(self, seg: Hashable) -> None:
        blocks = self.host.pop(seg, 0)
        self.host_used -= blocks
