"""RunningCalls: the calls one simulated engine runs, and their life on it (admission, lazy service
charging, preemption, completion).

State the engine's steps read: `running` (admission order), `prefilling` (calls with prefill chunks
left), `decoding` (the lockstep decode set, decode.py), `levels` (level policies' running calls by level,
levels.py). A decoding call's service is charged lazily (`charged_to`; charging.py shows why that equals
charging every step); `_flush` brings it up to the current step. KV blocks move through Residency
(residency.py); holds through EngineHolding (holding.py). Invariant: a call is in exactly one of
`prefilling` and `decoding` while it is in `running`, and in `sims` from arrival until it finishes.
"""

from __future__ import annotations

import math

from autellix.balance import EngineLoad
from autellix.policy import LevelPolicy, Policy
from autellix.programs import Call
from autellix.sim.decode import DecodeSet
from autellix.sim.holding import EngineHolding
from autellix.sim.levels import RunningLevels
from autellix.sim.request import DECODE, PREFILL, WAITING, SimCall
from autellix.sim.residency import Residency
from autellix.sim.stats import EngineStats


class RunningCalls:
    def __init__(self, index: int, policy: Policy, res: Residency, holding: EngineHolding | None,
                 swap: bool) -> None:
        self.index = index
        self.policy = policy
        self.table = policy.config.new_table()
        """Engine-local table: the plugin's view, fed the gateway's service/wait snapshots."""
        self.res = res
        self.holding = holding
        self.swap = swap
        """Preemption swaps a decoding call's KV out (else it is recomputed on resume)."""
        self.load = EngineLoad(index)
        self.sims: dict[Call, SimCall] = {}
        self.running: dict[SimCall, None] = {}  # insertion order = admission order
        self.prefilling: list[SimCall] = []
        self.decoding = DecodeSet(res.block)
        self.step = 0
        self.now = 0.0
        self.levels = RunningLevels(policy) if isinstance(policy, LevelPolicy) else None
        self.quanta = policy.quanta if isinstance(policy, LevelPolicy) else None
        self.stats = EngineStats()
        self._admitted = 0
        self._swap_out = self._swap_in = 0

    def _prefill_done(self, sc: SimCall, step: int) -> None:
        self.prefilling.remove(sc)
        sc.generated += 1
        sc.computed = sc.target + 1
        if sc.first_token < 0:
            sc.first_token = self.now
        sc.mode = DECODE

    def _push_event(self, sc: SimCall) -> None:
        """Next own event of a decoding call: completion, or the step its quantum runs out."""
        event = sc.step0 + sc.output - sc.generated0
        if self.quanta is not None:
            call = sc.call
            q = self.quanta[call.level]
            if q != math.inf:
                event = min(event, sc.charged_to + max(1, math.ceil(q - call.level_service)))
        self.decoding.push(sc, event)

    def _flush(self, sc: SimCall) -> None:
        if sc.mode == DECODE and sc.charged_to < self.step:
            self.policy.charge(sc.call, decode_tokens=self.step - sc.charged_to)
            sc.charged_to = self.step

    def _flush_all(self) -> None:
        for sc in self.running:
            self._flush(sc)

    # -- admission, preemption, completion ------------------------------------------------------------

    def _admit(self, sc: SimCall) -> None:
        self.policy.on_run(sc.call)
        sc.wait_s += self.now - sc.wait_start
        self._admitted += 1
        sc.admit_seq = self._admitted
        self.running[sc] = None
        if sc.swapped:  # resume decoding after copying the context back
            copied = self.res.load_swapped(sc)
            self._swap_in += copied
            self.stats.swap_in_blocks += copied
            self.decoding.add(sc, self.step)
            sc.charged_to = self.step
            sc.mode = DECODE
            if self.levels is not None:
                self.levels.refile(sc)
            self._push_event(sc)
            return
        hit, copied = self.res.load_fresh(sc)  # a resumed call recomputes its prompt and output so far
        if self.holding is not None:  # history copied back from the host tier was missed on the GPU
            self.holding.admitted(sc, hit - copied * self.res.block)
        if copied:
            self._swap_in += copied
            self.stats.offload_in_blocks += copied
        if sc.generated == 0 and sc.preemptions == 0:
            sc.hit_tokens = hit
        else:
            sc.recomputed += sc.prefill_left
        self.stats.prefill_tokens += sc.prefill_left
        sc.prefilled += sc.prefill_left
        sc.mode = PREFILL
        self.prefilling.append(sc)
        if self.levels is not None:
            self.levels.refile(sc)

    def _leave(self, sc: SimCall) -> int:
        """Take a running call out of the batch; return the private blocks it held."""
        if sc.mode == DECODE:
            self._flush(sc)
            self.decoding.remove(sc, self.step)
            private = self.res.blocks(sc.computed) - self.res.base(sc)
        else:
            self.prefilling.remove(sc)
            private = sc.private
        del self.running[sc]
        if self.levels is not None:
            self.levels.unfile(sc)
        return private

    def _preempt(self, sc: SimCall) -> None:
        was_decoding = sc.mode == DECODE
        private = self._leave(sc)
        self.policy.on_preempt(sc.call)
        sc.mode = WAITING
        sc.wait_start = self.now
        sc.preemptions += 1
        copied = self.res.swap_out(sc, private) if was_decoding and self.swap else 0
        if copied:
            sc.swaps += 1
            self._swap_out += copied
            self.stats.swap_outs += 1
            self.stats.swap_out_blocks += copied
        else:  # recompute on resume (also when the swap pool is full)
            self.res.release(sc, private)
            self.stats.recompute_preemptions += 1

    def _finish(self, sc: SimCall) -> None:
        """Complete a call already out of the prefill list and the decode set."""
        private = self.res.blocks(sc.computed) - self.res.base(sc)
        del self.running[sc]
        if self.levels is not None:
            self.levels.unfile(sc)
        self.res.release(sc, private)
        if self.holding is not None:
            self.holding.finished(sc, self.now)
        self.policy.remove(sc.call)
        self.table.finish_call(sc.call, self.now)
        del self.sims[sc.call]
        self.load.active -= 1
        sc.mode = WAITING
        sc.finished = self.now
