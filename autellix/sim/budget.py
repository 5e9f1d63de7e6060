"""EngineBudget: what one simulated engine can still fit in the step being formed (policy.Budget).

Three resources, all checked by `fits`: seats (max_num_seqs), the step's token budget (a call to admit
needs at least one token: a prefill chunk or a swapped-in call's decode), and KV blocks (what admitting
would take from `KVCache.available()`, keeping a watermark free; when they fall short, other programs'
holds are released first, lowest value first, so a hold never refuses a call). `release` gives back what preempting a
running call frees at once. Invariant: the estimates never exceed the truth (admission costs are exact
or upper bounds, released blocks exact or lower bounds), so the engine can always apply a batch the
policy built against this budget without over-allocating blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autellix.programs import Call

if TYPE_CHECKING:
    from autellix.sim.engine import Engine


class EngineBudget:
    __slots__ = ("engine", "seats", "tokens", "blocks", "programs")

    def __init__(self, engine: Engine, seats: int, tokens: int, blocks: int) -> None:
        self.engine = engine
        self.seats = seats
        self.tokens = tokens
        self.blocks = blocks
        self.programs: set[str] = set()
        """Programs with a call reserved in this budget: their holds stay (the reservation's cost
        counted their held blocks as already unavailable)."""

    def fits(self, call: Call) -> bool:
        if self.seats <= 0 or self.tokens <= 0:
            return False
        engine = self.engine
        cost = engine.admission_cost(engine.sims[call])
        if cost > self.blocks:  # never refuse a call while a hold could give way for it
            self.blocks += engine.free_holds(cost - self.blocks, self.programs | {call.program_id})
        return cost <= self.blocks

    def reserve(self, call: Call) -> None:
        engine = self.engine
        sc = engine.sims[call]
        self.seats -= 1
        self.programs.add(call.program_id)
        need = engine.token_need(sc)
        self.tokens -= need if need < self.tokens else self.tokens
        self.blocks -= engine.admission_cost(sc)

    def release(self, call: Call) -> None:
        engine = self.engine
        sc = engine.sims[call]
        self.seats += 1
        self.tokens += engine.tokens_held(sc)
        self.blocks += engine.release_blocks(sc)
