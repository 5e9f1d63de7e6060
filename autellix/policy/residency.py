"""KV residency at program level: holds across tool pauses and their release order; admission (admission.py).

One decision maker (docs/policy.md, 'KV residency'): this module decides, the engines (simulator, vLLM
plugin) apply. It is engine-agnostic: sizes are the engine's KV blocks, times are seconds on a clock the
engine passes in, and a hold's `key` is whatever handle the engine uses for the history it keeps (the
finished call). Pure Python, no engine import.

Holds. When a call of a program that has not ended finishes, the program's history (the finished call's
prompt and output) may be *held*: kept resident although no call uses it, until the program's next call
is admitted (which then owns the blocks), the hold's deadline passes, the program ends, or memory is short.
- Expected pause: the mean of the program's own observed pauses (call end -> its next call's arrival on
  this engine); before it has one, the mean over all programs seen here; before any, `hold_prior_s`.
- A hold is granted when the expected pause is at most `hold_max_s` and lasts `hold_slack` x that pause.
- Holds are a bias, never a lock (`soft`): engines release them before refusing a waiting call or
  preempting a running one for memory, lowest value first, and the held share is capped (`hold_cap`).
  `soft=False` is Continuum's rule (a hard pin for a TTL: the baseline `continuum`).
- Batch programs' holds are released before any interactive program's (docs/policy.md, rule 9); among
  each class, by value.
- Value, for the release order: recompute tokens saved per block-second the hold still occupies,
  tokens / (blocks x remaining), where remaining is the time until the program is expected back, or, once
  it is overdue, the time it has already been away (a program late for its expected return is likely in a
  long pause). Full blocks hold `block` tokens each, so in effect the hold whose program is expected back
  last goes first; a history with a partial last block weighs a little less.

Admission and pausing (which programs are resident at all) are the ProgramGate's (policy/admission.py);
this class owns the gate and tells it which programs were worth a hold and how much each hold is worth.

Invariant: every live hold is in `holds` under its key and in its program's set. Block counts are the
engine's (it knows which blocks holds share): `over_cap` takes the engine's exact held count.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Hashable
from dataclasses import dataclass

from autellix.policy.admission import ProgramGate, ResidencyCounters
from autellix.policy.config import PolicyConfig

MIN_REMAINING_S = 0.01
"""Floor of a hold's remaining time in its value (a program due back now is worth the most)."""
CONTINUUM_TTL_QUANTILE = 0.9
"""Continuum pins for a TTL taken from the observed tool-pause distribution; in its simplest form here,
the 90th percentile of the pauses seen so far (docs/simulator.md)."""


@dataclass(slots=True, eq=False)
class Hold:
    """One held history. `deadline` >= `start`; `expected` is when the program is expected back."""

    program_id: str
    key: Hashable
    blocks: int
    tokens: int
    start: float
    expected: float
    deadline: float
    batch: bool = False
    """The program is batch: its holds give way before any interactive program's (docs/policy.md, rule 9)."""
    live: bool = True

    def value(self, now: float) -> float:
        """Recompute tokens saved per block-second still to hold (module docstring)."""
        remaining = self.expected - now if now < self.expected else now - self.start
        return self.tokens / (max(self.blocks, 1) * max(remaining, MIN_REMAINING_S))


@dataclass(slots=True)
class Pauses:
    """Running mean of observed pauses."""

    total: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1

    def mean(self, default: float) -> float:
        return self.total / self.count if self.count else default


class ResidencyPolicy:
    """Holds and admission for one engine whose KV cache has `capacity` blocks (module docstring).

    `soft`: holds give way to memory pressure (Autellix); False: hard pins for their TTL (Continuum).
    `admission`: a ProgramGate admits and pauses programs by working set (`gate`; Autellix); False: every
    program is resident (`gate` is None).
    `ttl_quantile`: when set, every hold lasts this quantile of all observed pauses (Continuum's TTL),
    instead of `hold_slack` x the program's own expected pause.
    """

    def __init__(self, config: PolicyConfig, capacity: int, soft: bool = True, admission: bool = True,
                 ttl_quantile: float | None = None) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity: must be > 0 blocks, got {capacity}")
        self.config = config
        self.capacity = capacity
        self.soft = soft
        self.ttl_quantile = ttl_quantile
        self.counters = ResidencyCounters()
        self.gate = ProgramGate(config, capacity, self.counters) if admission else None
        self.holds: dict[Hashable, Hold] = {}
        self.by_program: dict[str, set[Hashable]] = {}
        self._deadlines: list[tuple[float, int, Hold]] = []
        self._seq = itertools.count()
        self.pauses: dict[str, Pauses] = {}
        self.all_pauses = Pauses()
        self._recent: list[float] = []  # bounded sample of pauses for the TTL quantile
        self.last_finish: dict[str, float] = {}

    # -- pauses ----------------------------------------------------------------------------------------

    def arrive(self, program_id: str, now: float) -> None:
        """A call of the program arrived: the time since its last call ended here is a pause."""
        last = self.last_finish.pop(program_id, None)
        if last is None:
            return
        pause = max(now - last, 0.0)
        self.pauses.setdefault(program_id, Pauses()).add(pause)
        self.all_pauses.add(pause)
        if self.ttl_quantile is not None:
            recent = self._recent
            recent.append(pause)
            if len(recent) > 1024:
                del recent[:512]

    def expected_pause(self, program_id: str) -> float:
        prior = self.all_pauses.mean(self.config.hold_prior_s)
        own = self.pauses.get(program_id)
        return own.mean(prior) if own else prior

    def _ttl(self) -> float:
        if not self._recent:
            return self.config.hold_prior_s
        ordered = sorted(self._recent)
        return ordered[min(int(self.ttl_quantile * len(ordered)), len(ordered) - 1)]

    # -- holds -----------------------------------------------------------------------------------------

    def finished(self, program_id: str, key: Hashable, blocks: int, tokens: int, now: float,
                 batch: bool = False) -> Hold | None:
        """A call of a live program (`batch`: of the batch class) finished with `tokens` of history in
        `blocks` resident blocks: the hold to take (None: no hold). The engine applies it, then asks
        `over_cap` which to give back."""
        self.last_finish[program_id] = now
        if self.gate is not None:
            self.gate.finished(program_id)
        if blocks <= 0:
            return None
        if self.ttl_quantile is not None:
            pause = ttl = self._ttl()
        else:
            pause = self.expected_pause(program_id)
            if pause > self.config.hold_max_s:
                return None
            ttl = self.config.hold_slack * pause
        if ttl <= 0 or (self.soft and self.config.hold_cap <= 0):
            return None
        if self.gate is not None:
            self.gate.note_holdable(program_id)
        old = self.holds.get(key)
        if old is not None:
            self.release(old)
        hold = Hold(program_id, key, blocks, tokens, now, now + pause, now + ttl, batch)
        self.holds[key] = hold
        self.by_program.setdefault(program_id, set()).add(key)
        heapq.heappush(self._deadlines, (hold.deadline, next(self._seq), hold))
        self.counters.holds_granted += 1
        return hold

    def release(self, hold: Hold) -> None:
        """Forget a hold (the engine gives its blocks back). Idempotent."""
        if not hold.live:
            return
        hold.live = False
        del self.holds[hold.key]
        keys = self.by_program[hold.program_id]
        keys.discard(hold.key)
        if not keys:
            del self.by_program[hold.program_id]

    def take(self, key: Hashable) -> Hold | None:
        """The history under `key` is used by an admitted call, which owns its blocks now: the hold ends."""
        hold = self.holds.get(key)
        if hold is not None:
            self.release(hold)
        return hold

    def expired(self, now: float) -> list[Hold]:
        """Holds whose deadline is <= now, released."""
        out, heap = [], self._deadlines
        while heap and heap[0][0] <= now:
            hold = heapq.heappop(heap)[2]
            if hold.live:
                self.release(hold)
                out.append(hold)
        self.counters.holds_expired += len(out)
        return out

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def by_value(self, now: float, keep: Collection[str] = ()) -> list[Hold]:
        """Live soft holds of programs not in `keep`, batch programs' first, then lowest value first
        (what to release under pressure); none when holds are hard."""
        if not self.soft:
            return []
        return sorted((h for h in self.holds.values() if h.program_id not in keep),
                      key=lambda h: (not h.batch, h.value(now)))

    def over_cap(self, held: int, now: float) -> list[Hold]:
        """With `held` blocks held (the engine's exact count), the holds to release, lowest value first,
        so the held share stays within `hold_cap`. Released here; the engine gives their blocks back."""
        cap = self.config.hold_cap * self.capacity
        out = []
        if not self.soft or held <= cap:
            return out
        for hold in self.by_value(now):
            if held <= cap:
                break
            self.release(hold)
            held -= hold.blocks
            out.append(hold)
        self.counters.holds_released_cap += len(out)
        return out

    def note_pressure(self, released: int) -> None:
        self.counters.holds_released_pressure += released

    # -- programs --------------------------------------------------------------------------------------

    def pause(self) -> list[Hold]:
        """Programs the gate pauses now (smallest working set first: ProgramGate.pause); their holds,
        released, are returned for the engine to give back."""
        if self.gate is None or not self.gate.over():
            return []  # (the common case, on every engine step)
        released: list[Hold] = []
        for pid in self.gate.pause():
            released += self.drop(pid)
        return released

    def end(self, program_id: str) -> list[Hold]:
        """The program ended: it leaves the gate; its holds, released, are returned."""
        if self.gate is not None:
            self.gate.end(program_id)
        self.last_finish.pop(program_id, None)
        self.pauses.pop(program_id, None)
        return self.drop(program_id)

    def drop(self, program_id: str) -> list[Hold]:
        """Release every hold of the program (its next call was admitted, or it left); returns them."""
        holds = [self.holds[k] for k in self.by_program.get(program_id, ())]
        for hold in holds:
            self.release(hold)
        return holds


def residency_for(mode: str, config: PolicyConfig, capacity: int) -> ResidencyPolicy | None:
    """The residency policy of a system's `residency` mode (policy/systems.py) on an engine of `capacity`
    blocks: "autellix": soft holds and the program gate, while `config.residency` is on; "continuum": hard
    pins for a TTL (CONTINUUM_TTL_QUANTILE of the observed pauses), no gate; "": none."""
    if mode == "autellix" and config.residency:
        return ResidencyPolicy(config, capacity)
    if mode == "continuum":
        return ResidencyPolicy(config, capacity, soft=False, admission=False,
                               ttl_quantile=CONTINUUM_TTL_QUANTILE)
    return None
