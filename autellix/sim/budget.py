"""SimBudget: what one simulated engine can still fit in the step being formed (policy.Budget).

A pure query over the engine's data: it reads the engine's call records and KV state and changes
neither; reserve / release move only its own counters. Three resources, all checked by `fits`: seats
(max_num_seqs), the step's token budget (a call to admit needs at least one token: a prefill chunk or a
swapped-in call's decode), and KV blocks (what admitting would take from `KVCache.available()`, keeping a
watermark free). `release` gives back what preempting a running call frees at once.

Holds never refuse a call: when a call lacks blocks that other programs' soft holds keep, `fits` says no
and records the shortfall in `short` (the blocks missing, the programs whose holds must stay); the engine
releases holds for it (lowest value first) and forms the batch again from a new budget (SimEngine
._schedule). That second pass sees the same calls and costs up to the short call (the released holds
belong to programs with no call reserved, whose chains no reserved call shares), except what earlier
victims free: `freed` carries those amounts over, so the pass repeats the first one exactly and the
short call sees the blocks the holds gave back.

Invariant: the estimates never exceed the truth (admission costs are exact or upper bounds, released
blocks exact or lower bounds), so the engine can always apply a batch the policy built against this
budget without over-allocating blocks.
"""

from __future__ import annotations

from collections.abc import Collection

from autellix.programs import Call
from autellix.sim.request import DECODE, SimCall
from autellix.sim.residency import Residency


class SimBudget:
    __slots__ = ("sims", "res", "step", "seats", "tokens", "blocks", "holders", "programs", "freed",
                 "short")

    def __init__(self, sims: dict[Call, SimCall], res: Residency, step: int, seats: int, tokens: int,
                 blocks: int, holders: Collection[str] = (), freed: dict[Call, int] | None = None) -> None:
        self.sims = sims
        self.res = res
        self.step = step
        self.seats = seats
        self.tokens = tokens
        self.blocks = blocks
        self.holders = holders
        """Programs whose soft holds could give way (their blocks are not available now)."""
        self.programs: set[str] = set()
        """Programs with a call reserved in this budget: their holds stay (the reservation's cost
        counted their held blocks as already unavailable)."""
        self.freed: dict[Call, int] = dict(freed) if freed else {}
        """Blocks each victim released so far frees (carried over from an earlier pass)."""
        self.short: tuple[int, frozenset[str]] | None = None
        """(blocks missing, programs whose holds stay) of the first call only released holds would fit;
        once set, nothing fits (the engine releases the holds and forms the batch again)."""

    def fits(self, call: Call) -> bool:
        if self.seats <= 0 or self.tokens <= 0 or self.short is not None:
            return False
        cost = self.res.admission_cost(self.sims[call])
        if cost <= self.blocks:
            return True
        keep = self.programs | {call.program_id}
        if any(p not in keep for p in self.holders):  # never refuse a call while a hold could give way
            self.short = (cost - self.blocks, frozenset(keep))
        return False

    def reserve(self, call: Call) -> None:
        sc = self.sims[call]
        self.seats -= 1
        self.programs.add(call.program_id)
        need = self.token_need(sc)
        self.tokens -= need if need < self.tokens else self.tokens
        self.blocks -= self.res.admission_cost(sc)

    def release(self, call: Call) -> None:
        if self.short is not None:
            return  # this pass is discarded
        sc = self.sims[call]
        self.seats += 1
        self.tokens += 1 if sc.mode == DECODE else sc.prefill_left
        blocks = self.freed.get(call)
        if blocks is None:
            blocks = self.freed[call] = self.res.release_blocks(sc, self.res.private(sc, self.step))
        self.blocks += blocks

    def token_need(self, sc: SimCall) -> int:
        """Step tokens admitting `sc` takes: 1 to resume decoding, else its uncached prefill."""
        if sc.swapped:
            return 1
        target = sc.prompt + sc.generated
        return target - self.res.hit_tokens(sc, target)
