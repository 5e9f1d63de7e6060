"""KV-cache blocks of one engine: a GPU pool with a per-program prefix cache, and a CPU swap pool.

Blocks are counted, not named. A call's context is a *chain* of segments followed by its own segment:
each segment is the run of full blocks that one call contributed to a program's history (its prompt's
new part and its output). A later call whose prompt extends call p's prompt + output shares p's chain and
p's segment (only full blocks are shareable, as in vLLM's block hashing). Segment keys are arbitrary
hashable objects (the simulator uses its per-call records).

GPU block states, and the invariant this class keeps:
    free + evictable + held + pinned + private == gpu_blocks
- free:      unused.
- evictable: cached blocks of segments no running call uses and no hold keeps (refs == 0, holds == 0);
             they count as available, and `alloc` evicts them (a segment loses its tail blocks first):
             first the `early` tier (oldest first: ended programs' histories and released holds), then
             the `lru` tier, least recently used first (vLLM evicts plain LRU: only `lru` is used then).
- held:      cached blocks of segments no running call uses but a hold keeps (holds > 0, refs == 0):
             a paused program's history (policy/residency.py); not available, never evicted.
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
from collections.abc import Hashable, Iterable, Sequence

View = tuple[Hashable, int]
"""(segment key, number of its leading blocks used by a chain)."""


class KVCache:
    """GPU blocks with an LRU prefix cache over segments, plus a CPU swap pool (counts only)."""

    __slots__ = ("gpu_blocks", "cpu_blocks", "cpu_used", "caching", "free", "evictable",
                 "cached", "refs", "lru", "early", "holds", "held", "evicted", "offload", "host",
                 "host_used", "offloaded", "dead")

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
        """Evictable segments (refs == 0, holds == 0, cached > 0), least recently used first."""
        self.early: OrderedDict[Hashable, None] = OrderedDict()
        """Evictable segments evicted before any in `lru` (ended programs', released holds'), oldest first."""
        self.holds: dict[Hashable, int] = {}
        """segment -> holds keeping it (> 0)."""
        self.held = 0
        self.evicted = 0
        self.offload = offload and caching
        self.host: OrderedDict[Hashable, int] = OrderedDict()
        """segment -> blocks cached in host memory (> 0), least recently stored first."""
        self.host_used = 0
        self.offloaded = 0
        """Blocks copied to the host tier so far (stores are asynchronous in vLLM: not charged)."""
        self.dead: set[Hashable] = set()
        """Demoted segments (an ended program's history): evicted first, never copied to the host tier."""

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
        cached = self.cached
        while need:
            tier = self.early if self.early else self.lru
            seg = next(iter(tier))
            have = cached[seg]
            take = have if have <= need else need
            need -= take
            self.evictable -= take
            self.evicted += take
            if take == have:
                del cached[seg]
                del tier[seg]
            else:
                cached[seg] = have - take
            if seg in self.dead:
                if take == have:
                    self.dead.discard(seg)
            elif self.offload:
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
        cached, refs, holds = self.cached, self.refs, self.holds
        for seg, n in chain:
            have = cached.get(seg, 0)
            if have < n:
                cost += n - have
            if seg not in refs and seg not in holds:  # held blocks are not available already
                cost += have
        return cost

    def pin(self, chain: Sequence[View]) -> int:
        """A running call starts using `chain`: pin every segment and make all its blocks resident.
        Returns the number of blocks that were missing (the caller recomputes or copies them in)."""
        cached, refs = self.cached, self.refs
        missing = 0
        for seg, _n in chain:  # pin first, so the allocation below cannot evict this chain
            r = refs.get(seg, 0)
            if r == 0:
                self._unlist(seg)
                self.dead.discard(seg)
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
        refs = self.refs
        for i in range(len(chain) - 1, -1, -1):
            seg = chain[i][0]
            r = refs[seg] - 1
            if r:
                refs[seg] = r
                continue
            del refs[seg]
            self._list(seg, self.lru)

    def _unlist(self, seg: Hashable) -> None:
        """An unused segment gets a user (pin or hold): it leaves its evictable tier or the held count."""
        have = self.cached.get(seg, 0)
        if seg in self.holds:
            self.held -= have
        elif seg in self.lru:
            del self.lru[seg]
            self.evictable -= have
        elif seg in self.early:
            del self.early[seg]
            self.evictable -= have

    def _list(self, seg: Hashable, tier: OrderedDict) -> None:
        """A segment lost its last running user: held if a hold keeps it, else evictable in `tier`."""
        have = self.cached.get(seg, 0)
        if not have:
            return
        if seg in self.holds:
            self.held += have
        else:
            tier[seg] = None
            self.evictable += have

    # -- holds (policy/residency.py decides; these keep the block states) -----------------------------

    def hold(self, chain: Sequence[View]) -> int:
        """Keep `chain`'s resident blocks cached while no running call uses them; returns its resident
        blocks (the hold's size)."""
        holds, refs, cached = self.holds, self.refs, self.cached
        size = 0
        for seg, _ in chain:
            size += cached.get(seg, 0)
            c = holds.get(seg, 0)
            if c == 0 and seg not in refs:
                self._unlist(seg)
                holds[seg] = 1
                self.held += cached.get(seg, 0)
            else:
                holds[seg] = c + 1
        return size

    def unhold(self, chain: Sequence[View]) -> None:
        """A hold ends: segments nothing else keeps become evictable, in the `early` tier (a released
        hold's program is late or its blocks were needed: evict them before live programs' history).
        Leaf first, like `unpin`."""
        holds, refs = self.holds, self.refs
        for i in range(len(chain) - 1, -1, -1):
            seg = chain[i][0]
            c = holds[seg] - 1
            if c:
                holds[seg] = c
                continue
            del holds[seg]
            if seg not in refs:
                have = self.cached.get(seg, 0)
                self.held -= have
                self._list(seg, self.early)

    def demote(self, segments: Iterable[Hashable]) -> None:
        """These segments are an ended program's history: evict them before any other evictable one,
        drop their host copies and never copy them to the host tier (no call will read them again)."""
        lru, early, dead = self.lru, self.early, self.dead
        for seg in segments:
            self._drop_host(seg)
            if seg in lru:
                del lru[seg]
                early[seg] = None
            if seg in self.cached:
                dead.add(seg)

    def take_own(self, seg: Hashable) -> int:
        """A call resumes: its own cached segment (if any) leaves the cache and becomes private again.
        Returns its resident blocks, which the caller counts as already allocated."""
        self._drop_host(seg)
        if seg not in self.refs:
            self._unlist(seg)
        return self.cached.pop(seg, 0)

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

    def check(self, private: int) -> None:
        """Assert every block-state invariant (tests): the counters match the segments, and the block
        states add up to the pool with `private` blocks owned by running calls."""
        cached, refs = self.cached, self.refs
        assert self.free >= 0 and self.evictable >= 0 and self.held >= 0
        assert self.evictable == sum(cached[s] for s in self.lru) + sum(cached[s] for s in self.early)
        assert self.held == sum(cached.get(s, 0) for s in self.holds if s not in refs)
        assert not (set(self.lru) | set(self.early)) & (set(refs) | set(self.holds))
        assert self.dead <= set(cached) and not self.dead & set(self.host)
        assert self.free + self.evictable + self.held + self.pinned() + private == self.gpu_blocks

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
