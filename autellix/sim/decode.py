"""The decoding calls of one engine, advanced in lockstep without touching each call.

Every decoding call gains exactly one token per engine step, so the set keeps aggregates that move
analytically with the step counter instead of per-call state:
- `n`: calls decoding;
- the summed context (KV tokens attended to) at step s is ctx_ref + n * (s - ref_step);
- `hist[r]`: calls that need a new KV block when executing a step s with s % block == r. A call with
  c tokens at step s needs a block for step s exactly when c % block == 0, and c - s stays constant
  while it decodes, so its class r = (s - c) % block never changes;
- `heap`: (step, admit_seq, version, call) per decoding call, the engine step of its next own event
  (completion or quantum expiry). Entries whose version differs from the call's are stale.
"""

from __future__ import annotations

import heapq

from autellix.sim.request import SimCall


class DecodeSet:
    __slots__ = ("block", "n", "ctx_ref", "ref_step", "hist", "heap")

    def __init__(self, block: int) -> None:
        self.block = block  # tokens per KV block
        self.n = 0
        self.ctx_ref = 0
        self.ref_step = 0
        self.hist = [0] * block
        self.heap: list[tuple[int, int, int, SimCall]] = []

    def ctx(self, step: int) -> int:
        """Summed context of all decoding calls at engine step `step`."""
        return self.ctx_ref + self.n * (step - self.ref_step)

    def _rebase(self, step: int) -> None:
        self.ctx_ref += self.n * (step - self.ref_step)
        self.ref_step = step

    def add(self, sc: SimCall, step: int) -> None:
        """`sc` starts decoding at `step` with sc.computed tokens in KV and sc.generated tokens out."""
        self._rebase(step)
        sc.step0 = step
        sc.computed0 = sc.computed
        sc.generated0 = sc.generated
        self.n += 1
        self.ctx_ref += sc.computed
        self.hist[(step - sc.computed) % self.block] += 1

    def remove(self, sc: SimCall, step: int) -> None:
        """`sc` stops decoding at `step`; its computed/generated counters are brought up to date."""
        self._rebase(step)
        done = step - sc.step0
        sc.computed = sc.computed0 + done
        sc.generated = sc.generated0 + done
        self.n -= 1
        self.ctx_ref -= sc.computed
        self.hist[(sc.step0 - sc.computed0) % self.block] -= 1
        sc.event_version += 1

    def growth(self, step: int, k: int) -> int:
        """New KV blocks the decoding calls need to execute steps step .. step+k-1."""
        if k <= 0:
            return 0
        block = self.block
        full, part = divmod(k, block)
        hist = self.hist
        need = full * self.n
        for j in range(step, step + part):
            need += hist[j % block]
        return need

    def steps_within(self, step: int, blocks: int, limit: int) -> int:
        """Most steps (<= limit) whose KV growth fits in `blocks`."""
        if self.growth(step, limit) <= blocks:
            return limit
        lo, hi = 0, limit  # growth(lo) fits, growth(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.growth(step, mid) <= blocks:
                lo = mid
            else:
                hi = mid
        return lo

    def push(self, sc: SimCall, event_step: int) -> None:
        sc.event_version += 1
        heapq.heappush(self.heap, (event_step, sc.admit_seq, sc.event_version, sc))

    def next_event(self) -> int | None:
        heap = self.heap
        while heap and heap[0][2] != heap[0][3].event_version:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, step: int) -> list[SimCall]:
        """Decoding calls whose event step is <= `step` (live entries only)."""
        heap, due = self.heap, []
        while heap and heap[0][0] <= step:
            _, _, version, sc = heapq.heappop(heap)
            if version == sc.event_version:
                due.append(sc)
        return due
