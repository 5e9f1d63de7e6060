"""EngineHolding: one simulated engine carrying out the policy core's residency decisions.

policy/residency.py and policy/admission.py decide (which history to hold and for how long, which hold
gives way first, which program is resident); this class applies those decisions to the engine's KVCache
and queues, the way the vLLM plugin applies them to vLLM's block pool:
- a finished call's history (`Residency.history`) is held with `KVCache.hold`; the hold ends with
  `KVCache.unhold` when the program's next call is admitted (it pins the blocks first, so nothing moves),
  at the deadline, at program end, or when memory is short;
- `free(need)` releases soft holds lowest value first: the engine calls it before it refuses a waiting
  call (SimBudget.short) or preempts a running call for memory (SimEngine._relieve_pressure);
- calls of programs not admitted wait in `gated` (FIFO by program) outside the policy's queues, and join
  them when the gate lets their program in;
- an ended program's holds go and its cached history moves to the eviction-first tier (`demote`).
Invariant: `chains` has exactly the keys of the policy's live holds; each chain's hold is applied to the
KVCache once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Hashable, Iterable

from autellix.policy.residency import Hold, ResidencyPolicy
from autellix.sim.kv import KVCache
from autellix.sim.request import SimCall
from autellix.sim.residency import Residency


class EngineHolding:
    __slots__ = ("policy", "kv", "res", "demote_ended", "chains", "gated")

    def __init__(self, policy: ResidencyPolicy, res: Residency, demote_ended: bool) -> None:
        self.policy = policy
        self.res = res
        self.kv: KVCache = res.kv
        self.demote_ended = demote_ended
        self.chains: dict[Hashable, tuple] = {}
        self.gated: OrderedDict[str, list[SimCall]] = OrderedDict()

    # -- admission -------------------------------------------------------------------------------------

    def receive(self, sc: SimCall) -> bool:
        """A call arrived; True when it may join the queues now, False when it waits at the gate."""
        pid, gate = sc.call.program_id, self.policy.gate
        self.policy.arrive(pid, sc.issued)
        if gate is None:
            return True
        if gate.passes(sc.call.program.batch) and pid not in self.gated:
            gate.admit(pid, self.res.blocks(sc.prompt))
        if pid in self.gated or not gate.admitted(pid):
            if pid not in self.gated:
                self.policy.counters.programs_gated += 1
            self.gated.setdefault(pid, []).append(sc)
            return False
        gate.started(pid)
        return True

    def admit_gated(self, idle: bool) -> list[SimCall]:
        """Calls of gated programs the gate lets in now, first come first served (`idle`: the engine
        has nothing to run, so the first is let in whatever the working sets say)."""
        out: list[SimCall] = []
        gated, gate = self.gated, self.policy.gate
        while gated:
            pid, calls = next(iter(gated.items()))
            if not gate.admit(pid, self.res.blocks(max(sc.prompt for sc in calls)), idle and not out,
                              calls[0].call.program.batch):
                break
            del gated[pid]
            for _ in calls:
                gate.started(pid)
            out.extend(calls)
        return out

    # -- holds -----------------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Expired holds go; programs over the working-set limit at a tool boundary are paused."""
        for hold in self.policy.expired(now):
            self._unhold(hold)
        for hold in self.policy.pause():
            self._unhold(hold)

    def admitted(self, sc: SimCall, hit: int) -> None:
        """`sc` was admitted with `hit` prompt tokens cached and has pinned its chain: the hold on its
        prefix call's history ends; what it missed of that history feeds the thrash signal."""
        gate = self.policy.gate
        if gate is not None:
            gate.grow(sc.call.program_id, self.res.blocks(sc.prompt))
            if sc.generated == 0 and sc.preemptions == 0:
                gate.observe(sc.call.program_id, self.res.base(sc) * self.res.block, hit)
        if sc.prefix is not None:
            hold = self.policy.take(sc.prefix)
            if hold is not None:
                self.kv.unhold(self.chains.pop(hold.key))

    def finished(self, sc: SimCall, now: float) -> None:
        """`sc` finished and released its blocks: hold its history if the policy says so."""
        policy, kv = self.policy, self.kv
        pid = sc.call.program_id
        if policy.gate is not None:
            policy.gate.grow(pid, self.res.blocks(sc.prompt + sc.output))
        if not kv.caching:
            return
        chain = self.res.history(sc)
        blocks = sum(kv.cached.get(seg, 0) for seg, _ in chain)
        if policy.finished(pid, sc, blocks, sc.prompt + sc.output, now, sc.call.program.batch) is None:
            return
        kv.hold(chain)
        self.chains[sc] = chain
        for hold in policy.over_cap(kv.held, now):
            self._unhold(hold)

    def free(self, need: int, now: float, keep: Collection[str] = ()) -> int:
        """Release soft holds, lowest value first, until `need` more blocks are available (or none is
        left); never those of programs in `keep` (the program asking, programs with calls already
        admitted in this step). Returns the blocks made available."""
        kv = self.kv
        before = kv.available()
        released = 0
        for hold in self.policy.by_value(now, keep):
            if kv.available() - before >= need:
                break
            self.policy.release(hold)
            self._unhold(hold)
            released += 1
        self.policy.note_pressure(released)
        return kv.available() - before

    def end(self, program_id: str, calls: Iterable[SimCall]) -> bool:
        """The program ended (`calls`: its records): its holds go, it leaves the gate, and its cached
        history is evicted first. True when that freed held blocks or gate room."""
        gate = self.policy.gate
        resident = gate is not None and gate.admitted(program_id)
        holds = self.policy.end(program_id)
        for hold in holds:
            self._unhold(hold)
        if self.demote_ended:
            self.kv.demote(calls)
        return bool(holds) or resident

    def holders(self) -> Collection[str]:
        """Programs whose holds give way to memory pressure (none when holds are hard pins)."""
        return self.policy.by_program if self.policy.soft else ()

    def next_wake(self) -> float | None:
        return self.policy.next_deadline()

    def _unhold(self, hold: Hold) -> None:
        self.kv.unhold(self.chains.pop(hold.key))
