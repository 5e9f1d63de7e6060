"""KV residency at program level: holds across tool pauses, their release order, program admission.

One decision maker (DESIGN.md §8): this module decides, engines apply (the simulator's `Engine`, the vLLM
plugin). It is engine-agnostic: sizes are the engine's KV blocks, times are seconds on a clock the engine
passes in, and a hold's `key` is whatever handle the engine uses for the history it keeps (the finished
call). Pure Python, no engine import.

Holds. When a call of a program that has not ended finishes, the program's history (the finished call's
prompt and output) may be *held*: kept resident although no call uses it, until the program's next call
is admitted (which then owns the blocks), the hold's deadline passes, the program ends, or memory is short.
- Expected pause: the mean of the program's own observed pauses (call end -> its next call's arrival on
  this engine); before it has one, the mean over all programs seen here; before any, `hold_prior_s`.
- A hold is granted when the expected pause is at most `hold_max_s` and lasts `hold_slack` x that pause.
- Holds are a bias, never a lock (`soft`): engines release them before refusing a waiting call or
  preempting a running one for memory, lowest value first, and the held share is capped (`hold_cap`).
  `soft=False` is Continuum's rule (a hard pin for a TTL: the baseline `continuum`).
- Value, for the release order: recompute tokens saved per block-second the hold still occupies,
  tokens / (blocks x remaining), where remaining is the time until the program is expected back, or, once
  it is overdue, the time it has already been away (a program late for its expected return is likely in a
  long pause). Full blocks hold `block` tokens each, so in effect the hold whose program is expected back
  last goes first; a history with a partial last block weighs a little less.

Admission. Programs are admitted (made *resident*) per engine. A resident program's working set is its
latest context (blocks). The gate closes when the working sets reach `admit_high` of the cache *and*
holds are failing: more than THRASH_SHARE of the history that returning programs worth a hold (back
within `hold_max_s`) expected to find cached was missing (a running mean over their calls, `observe`);
it opens again below `admit_low`. Working sets past the cache alone are not enough: without tool pauses
(chat's back-to-back turns, or users thinking longer than `hold_max_s`) PLAS already keeps the young,
small programs running and lets the old ones wait, which packs the cache better than any FIFO gate
(measured in docs/simulator.md, "KV residency"). While closed, no program is admitted (its call waits).
Calls of resident programs are never held back. Working sets grow after admission (an agent's history
grows every turn), so admission alone overshoots: when they pass `admit_high`, resident programs at a
tool boundary (no call in flight here) are *paused*, lowest hold value first (the program expected back
last; one without a hold first of all), until they fit again: the paused program loses its hold and
residency, and its next call waits at the gate like a new program's (ThunderAgent's insight, with
Autellix's own pause predictions choosing whom). Gated programs enter first come, first served: FCFS
bounds every program's wait at the gate by the programs ahead of it (ordering the gate by level would
let the steady stream of new, level-0 programs of a saturated fleet starve paused ones). A program leaves
(and its holds go) when it ends: the gateway says so (DELETE, SDK exit, table TTL); in the simulator,
its last call.

Invariants: every live hold is in `holds` under its key and in its program's set; `held_blocks` is the
sum of live holds' blocks (an estimate for the cap: the engine's own count is exact); `working` holds
exactly the admitted programs, `total` is the sum of their working sets, `inflight` has the same keys.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass

from autellix.policy.config import PolicyConfig

MIN_REMAINING_S = 0.01
"""Floor of a hold's remaining time in its value (a program due back now is worth the most)."""
THRASH_SHARE = 0.1
"""The gate may close once more than this share of resident programs' expected history was missing."""
MISS_WEIGHT = 0.05
"""Weight of each call in the running mean of the missed share (about the last 20 calls)."""


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


@dataclass(slots=True)
class ResidencyCounters:
    holds_granted: int = 0
    holds_expired: int = 0
    holds_released_pressure: int = 0
    holds_released_cap: int = 0
    programs_gated: int = 0
    programs_paused: int = 0


class ResidencyPolicy:
    """Holds and admission for one engine whose KV cache has `capacity` blocks (module docstring).

    `soft`: holds give way to memory pressure (Autellix); False: hard pins for their TTL (Continuum).
    `admission`: gate new programs by working set (Autellix); False: every program is admitted.
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
        self.admission = admission
        self.ttl_quantile = ttl_quantile
        self.holds: dict[Hashable, Hold] = {}
        self.by_program: dict[str, set[Hashable]] = {}
        self.held_blocks = 0
        self._deadlines: list[tuple[float, int, Hold]] = []
        self._seq = itertools.count()
        self.pauses: dict[str, Pauses] = {}
        self.all_pauses = Pauses()
        self._recent: list[float] = []  # bounded sample of pauses for the TTL quantile
        self.last_finish: dict[str, float] = {}
        self.working: dict[str, int] = {}
        self.total = 0
        self.inflight: dict[str, int] = {}
        """Resident program -> its calls admitted here and not finished (0: at a tool boundary)."""
        self.gate_closed = False
        self.gating = False
        self.missed = 0.0
        """Running mean of the share of expected history that returning holdable programs missed."""
        self.holdable: set[str] = set()
        """Programs whose last call ended with a pause worth a hold expected (their next call counts)."""
        self.counters = ResidencyCounters()

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

    def finished(self, program_id: str, key: Hashable, blocks: int, tokens: int, now: float) -> Hold | None:
        """A call of a live program finished with `tokens` of history in `blocks` resident blocks: the
        hold to take (None: no hold). The engine applies it, then asks `over_cap` which to give back."""
        self.last_finish[program_id] = now
        n = self.inflight.get(program_id)
        if n:
            self.inflight[program_id] = n - 1
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
        self.holdable.add(program_id)
        old = self.holds.get(key)
        if old is not None:
            self.release(old)
        hold = Hold(program_id, key, blocks, tokens, now, now + pause, now + ttl)
        self.holds[key] = hold
        self.by_program.setdefault(program_id, set()).add(key)
        self.held_blocks += blocks
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
        self.held_blocks -= hold.blocks

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
        """Live soft holds of programs not in `keep`, lowest value first (what to release under
        pressure); none when holds are hard."""
        if not self.soft:
            return []
        return sorted((h for h in self.holds.values() if h.program_id not in keep),
                      key=lambda h: h.value(now))

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

    # -- admission -------------------------------------------------------------------------------------

    def observe(self, program_id: str, expected_tokens: int, hit_tokens: int) -> None:
        """A program's call was admitted: it expected `expected_tokens` of its history cached and found
        `hit_tokens`. Counts toward the gate's thrash signal when the program was worth a hold."""
        if program_id in self.holdable and expected_tokens > 0:
            self.holdable.discard(program_id)
            share = max(expected_tokens - hit_tokens, 0) / expected_tokens
            self.missed += MISS_WEIGHT * (share - self.missed)

    def thrashing(self) -> bool:
        """Whether the gate is in force: latched on when holds fail (THRASH_SHARE) while the working sets
        pass `admit_high`, off again only once they fall below `admit_low`."""
        if self.gating:
            if self.total < self.config.admit_low * self.capacity:
                self.gating = False
        elif self.missed > THRASH_SHARE and self.total >= self.config.admit_high * self.capacity:
            self.gating = True
        return self.gating

    def admitted(self, program_id: str) -> bool:
        return not self.admission or program_id in self.working

    def admit(self, program_id: str, blocks: int, idle: bool = False) -> bool:
        """Whether a program's first call here may join the queues (module docstring); admits it if so.
        `idle`: the engine has nothing to run, so holding the program back would only waste it (and
        across engines could deadlock: two programs each admitted where the other's next call waits)."""
        if self.admitted(program_id):
            return True
        if not idle:
            if self.gate_closed:
                if self.total >= self.config.admit_low * self.capacity:
                    return False
                self.gate_closed = False
            if self.total and self.total + blocks > self.config.admit_high * self.capacity \
                    and self.thrashing():
                self.gate_closed = True
                return False
        self.working[program_id] = blocks
        self.total += blocks
        self.inflight[program_id] = 0
        return True

    def started(self, program_id: str) -> None:
        """A call of an admitted program joined the queues."""
        if program_id in self.inflight:
            self.inflight[program_id] += 1

    def rebalance(self, now: float) -> list[Hold]:
        """Pause resident programs at a tool boundary, lowest hold value first, while the working sets
        exceed `admit_high` (module docstring); returns their holds, released."""
        high = self.config.admit_high * self.capacity
        if not self.admission or self.total <= high or not self.thrashing():
            return []
        idle = [pid for pid, n in self.inflight.items() if n == 0]
        value = {pid: 0.0 for pid in idle}
        for hold in self.holds.values():
            if hold.program_id in value:
                value[hold.program_id] = max(value[hold.program_id], hold.value(now))
        released: list[Hold] = []
        for pid in sorted(idle, key=value.__getitem__):
            if self.total <= high:
                break
            self.total -= self.working.pop(pid)
            del self.inflight[pid]
            released += self._drop_holds(pid)
            self.counters.programs_paused += 1
        self.gate_closed = True
        return released

    def grow(self, program_id: str, blocks: int) -> None:
        """An admitted program's working set is now `blocks` (its latest context)."""
        old = self.working.get(program_id)
        if old is None:
            return
        self.working[program_id] = blocks
        self.total += blocks - old
        if self.total >= self.config.admit_high * self.capacity and self.thrashing():
            self.gate_closed = True

    def end(self, program_id: str) -> list[Hold]:
        """The program ended: it leaves the admitted set; its holds, released, are returned."""
        self.total -= self.working.pop(program_id, 0)
        self.inflight.pop(program_id, None)
        self.holdable.discard(program_id)
        self.last_finish.pop(program_id, None)
        self.pauses.pop(program_id, None)
        return self._drop_holds(program_id)

    def _drop_holds(self, program_id: str) -> list[Hold]:
        holds = [self.holds[k] for k in self.by_program.get(program_id, ())]
        for hold in holds:
            self.release(hold)
        return holds

    def programs(self) -> Iterable[str]:
        return self.working.keys()
