"""K-level queues with quanta, demotion and anti-starvation: the machinery PLAS, ATLAS and MLFQ share.

Semantics (docs/policy.md, 'Rules'):
- A call enters the level chosen by `entry_service(call)`: the level whose [lo, hi) holds it.
- Inside a level it may receive the level's quantum of service; past it, it moves down one level (the
  excess carries over, so charging 10 tokens at once or 1 token ten times gives the same level).
- Inside a level, calls are FCFS (`order`): by their own arrival (`Call.seq`), or, for program-aware
  policies with `level_order` "program", by their program's arrival first. A running call is never
  displaced by a waiting call of the same level (preemption only across levels: it pays only for a
  clearly better call).
- Adaptive order (`adaptive_order`, program-aware policies): while the engine's KV cache binds
  (`kv_bound`: the residency gate is in force, ProgramGate.thrashing), waiting calls go by their
  program's arrival across all levels (program FCFS, Continuum's order) and nothing is preempted for the
  order; levels, quanta and promotions are still kept, so the PLAS order returns as it was once the
  cache stops binding.
- Classes (docs/policy.md, rule 9): calls of batch programs *yield*: every interactive call goes before
  every yielding one (in both orders above), and a program-aware policy preempts a yielding running
  call for an interactive waiter whatever their levels (the preemption budget still bounds it). A
  yielding call that has waited `batch_wait_steps` steps in all stops yielding until it finishes (the
  batch starvation bound): it is then ordered as an interactive call of its level.
  `priority` = level + K x yields, so an engine's own priority queue and victim choice follow the class.
- Anti-starvation: a waiting call at level > 0 moves to level 0 when
      (program_wait + call_wait) / max(1, program_service + call_service) >= beta,
  where the program terms are the snapshots taken at arrival (zero for program-agnostic policies) and
  the call terms are the starvation counters, which promotion resets. `Call.wait` / `Call.service`
  (used for the table update) are never reset.

Cost: add/remove/demote are O(log n + memmove); `schedule` touches only the calls it admits plus the
running set; starvation checks use a heap of promotion deadlines, so no per-step scan of waiting calls.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterator

from autellix.policy.base import Policy
from autellix.policy.config import PolicyConfig
from autellix.programs import Call, CallState


class LevelPolicy(Policy):
    """Multi-level queues. Subclasses choose the entry service and whether programs are considered."""

    program_aware = True
    """Use program service/wait (PLAS, ATLAS) or only the call's own (MLFQ)."""
    gang = False
    """ATLAS: a program's active calls share one level (parallel calls are gang-scheduled)."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self.bounds = self.config.boundaries
        self.quanta = self.config.level_quanta()
        self.top = self.config.num_levels - 1
        self._by_program = self.program_aware and self.config.level_order == "program"
        self.levels = self.config.num_levels
        # queues[priority(call)] is a list of (order(call), call), sorted: FCFS inside a level; the
        # interactive levels come first, then the yielding ones (module docstring, "Classes").
        self.queues: list[list[tuple[tuple[float, int], Call]]] = [[] for _ in range(2 * self.levels)]
        # Promotion and lift deadlines: (step, seq, version, call); stale when call.version moved on.
        self._deadlines: list[tuple[float, int, int, Call]] = []
        self.promotions = 0
        self.lifts = 0
        """Yielding calls that reached the batch starvation bound."""
        self.kv_bound: Callable[[], bool] | None = None
        """Whether the engine's KV cache binds now (`bind_kv`); None: the order never adapts."""
        # Every waiting call by (yields, program arrival, call arrival), kept only once kv_bound is set.
        self.by_program: list[tuple[tuple[bool, float, int], Call]] = []

    # -- levels ------------------------------------------------------------------------------------

    def level_of(self, service: float) -> int:
        """The level whose [lo, hi) contains `service` (PolicyConfig.level_of)."""
        return self.config.level_of(service)

    def entry_service(self, call: Call) -> float:
        return call.start_service if self.program_aware else 0.0

    def entry(self, call: Call) -> None:
        level = self.level_of(self.entry_service(call))
        if self.gang:
            level = max([level] + [c.level for c in call.program.calls.values() if c is not call])
        call.level = level
        call.level_service = 0.0
        call.yields = call.program.batch

    def priority(self, call: Call) -> int:
        """The call's queue: its level, after every interactive level when it yields."""
        return call.level + self.levels if call.yields else call.level

    def order(self, call: Call) -> tuple[float, int]:
        """A call's FCFS place inside its level: (its program's arrival, or 0, then its own)."""
        return (call.program.created if self._by_program else 0.0, call.seq)

    def rank(self, call: Call) -> tuple:
        return (self.priority(call), 0 if call.state is CallState.RUNNING else 1, self.order(call))

    def outranks(self, waiter: Call, victim: Call) -> bool:
        if waiter.yields != victim.yields:  # a class apart: only program-aware policies preempt for it
            return victim.yields and self.program_aware
        return victim.level - waiter.level >= self.config.preempt_gap and not self.bound()

    def bind_kv(self, signal: Callable[[], bool]) -> None:
        """The engine that carries out residency gives its binding signal (the gate's `thrashing`),
        before any call arrives; ignored where `adaptive_order` is off or the policy is program-agnostic."""
        if self.num_waiting:
            raise RuntimeError("bind_kv: calls are already waiting")
        if self.program_aware and self.config.adaptive_order:
            self.kv_bound = signal

    def bound(self) -> bool:
        """Whether the adaptive order is in force: the KV cache binds (module docstring)."""
        return self.kv_bound is not None and self.kv_bound()

    def engine_key(self, call: Call) -> tuple[int, tuple[float, int]]:
        """(priority, place) an engine's own waiting queue orders `call` by (the plugin's LevelQueue):
        (priority, FCFS order) normally, (yields, (program arrival, call arrival)) while the cache binds."""
        if self.bound():
            return int(call.yields), (call.program.created, call.seq)
        return self.priority(call), self.order(call)

    def waiting_order(self) -> Iterator[Call]:
        if self.bound():
            for _, call in list(self.by_program):
                yield call
            return
        for queue in self.queues:
            if queue:
                # Iterate a snapshot: schedule() is lazy, and the engine may apply decisions while
                # it consumes them.
                for _, call in list(queue):
                    yield call

    def waiting_at(self, level: int) -> list[Call]:
        """Waiting calls at `level`, interactive ones first."""
        return [call for queue in (self.queues[level], self.queues[level + self.levels]) for _, call in queue]

    # -- queue membership --------------------------------------------------------------------------

    def _enqueue(self, call: Call) -> None:
        bisect.insort(self.queues[self.priority(call)], (self.order(call), call))
        if self.kv_bound is not None:
            bisect.insort(self.by_program, ((call.yields, call.program.created, call.seq), call))
        self._push_deadline(call)

    def _dequeue(self, call: Call, moving: bool = False) -> None:
        """Take a waiting call out of its level (and, unless it only `moving` between levels, out of
        the program order)."""
        _remove(self.queues[self.priority(call)], self.order(call), call)
        if self.kv_bound is not None and not moving:
            _remove(self.by_program, (call.yields, call.program.created, call.seq), call)

    def _move(self, call: Call, level: int) -> None:
        """Change a call's level, keeping queue membership consistent."""
        if call.level == level:
            return
        waiting = call.waiting_since >= 0
        if waiting:
            self._dequeue(call, moving=True)
        call.level = level
        call.level_service = 0.0
        if waiting:
            call.version += 1
            bisect.insort(self.queues[self.priority(call)], (self.order(call), call))
            self._push_deadline(call)
        if self.on_level_change is not None:
            self.on_level_change(call)

    # -- service and demotion ----------------------------------------------------------------------

    def charge(self, call: Call, decode_tokens: int = 0, prefill_tokens: int = 0) -> float:
        amount = super().charge(call, decode_tokens, prefill_tokens)
        call.level_service += amount
        level = call.level
        while level < self.top and call.level_service >= self.quanta[level]:
            call.level_service -= self.quanta[level]
            level += 1
        if level != call.level:
            carry = call.level_service
            self._move(call, level)
            call.level_service = carry  # _move zeroes it; a demotion keeps the excess
            if self.gang:
                self._gang_demote(call)
        return amount

    def _gang_demote(self, call: Call) -> None:
        for sibling in call.program.calls.values():
            if sibling is not call and sibling.level < call.level:
                self._move(sibling, call.level)

    # -- anti-starvation ---------------------------------------------------------------------------

    def _push_deadline(self, call: Call) -> None:
        if call.yields:
            lift = call.waiting_since + self.config.batch_wait_steps - call.wait
            heapq.heappush(self._deadlines, (lift, call.seq, call.version, call))
        if not self.config.starvation or call.level == 0:
            return
        pw, ps = (call.start_wait, call.start_service) if self.program_aware else (0.0, 0.0)
        need = self.config.beta * max(1.0, ps + call.starve_service) - pw - call.starve_wait
        heapq.heappush(self._deadlines, (call.waiting_since + need, call.seq, call.version, call))

    def next_event_step(self) -> int | None:
        heap = self._deadlines
        while heap and heap[0][2] != heap[0][3].version:
            heapq.heappop(heap)
        return max(self.step, math.ceil(heap[0][0])) if heap else None

    def tick(self, steps: int = 1) -> None:
        super().tick(steps)
        heap = self._deadlines
        while heap and heap[0][0] <= self.step:
            _, _, version, call = heapq.heappop(heap)
            if version != call.version or call.waiting_since < 0:
                continue
            if call.yields and self.current_wait(call) >= self.config.batch_wait_steps:
                self._lift(call)
            elif call.level > 0:
                self._promote(call)

    def _lift(self, call: Call) -> None:
        """A yielding call reached the batch starvation bound: it stops yielding (module docstring)."""
        self._dequeue(call)
        call.yields = False
        call.version += 1
        self.lifts += 1
        self._enqueue(call)
        if self.on_level_change is not None:
            self.on_level_change(call)

    def _promote(self, call: Call) -> None:
        """Move a starving waiting call to level 0 and reset only its starvation counters."""
        waited = self.step - call.waiting_since
        call.wait += waited
        call.waiting_since = self.step
        call.starve_wait = 0.0
        call.starve_service = 0.0
        self._move(call, 0)
        self.promotions += 1


def _remove(queue: list[tuple[tuple[float, int], Call]], key: tuple[float, int], call: Call) -> None:
    """Delete `call`, filed under `key`, from a sorted queue."""
    i = bisect.bisect_left(queue, (key,))
    if i == len(queue) or queue[i][1] is not call:
        raise RuntimeError(f"{call!r} is not queued under {key}")
    del queue[i]
