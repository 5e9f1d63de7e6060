"""ProgramGate: which programs are resident on one engine (admission and pausing), the other half of KV
residency (holds are residency.py's). Pure Python; engines apply its answers (sim/holding.py).

Programs are admitted (made *resident*) per engine. A resident program's working set is its latest
context, in blocks. Calls of resident programs are never held back.
- The gate is *in force* only while holds fail: the working sets exceed `admit_high` of the cache and
  returning programs worth a hold (back within `hold_max_s`) recently found part of the history they
  expected missing from the GPU: more than THRASH_SHARE of it in a running mean over their calls
  (`observe`; a block copied back from a host tier counts as missing, since it costs the copy). It stays
  in force until the working sets fall below `admit_low`. Working sets past the cache alone are not
  enough: without tool pauses (chat's back-to-back turns, or users thinking longer than `hold_max_s`)
  PLAS already keeps the young, small programs running and lets the old ones wait, which packs the cache
  better than a FIFO gate (docs/simulator.md, "KV residency").
- While in force, a new program is admitted only if the working sets stay under `admit_high` (and, once
  refused, only after they fall below `admit_low`: hysteresis), first come first served. FCFS bounds every
  program's wait at the gate by the programs ahead of it; ordered by level, the steady stream of new,
  level-0 programs of a saturated fleet would starve paused ones. The wide hysteresis (0.9 / 0.6 by
  default) leaves admitted programs room to grow: every pause throws away a program's computed history,
  so admitting into a gap that growth will close again costs more than the idle room (measured on the
  agent family, docs/simulator.md).
- Working sets grow after admission (an agent's history grows every turn), so admission alone
  overshoots: while in force and past `admit_high`, resident programs at a tool boundary (no call in
  flight here) are *paused*, smallest working set first (the cheapest history to recompute or copy back:
  ThunderAgent's rule), until the working sets fit: the paused program loses its residency (and its
  holds) and its next call waits at the gate like a new program's.
- An engine with nothing to run admits the first waiting program whatever the working sets say.
- Classes (docs/policy.md, rule 9): while batch programs are resident, an interactive program is
  admitted whatever the working sets say and is never paused; its working set counts, so batch programs
  make room for it (paused at their next tool boundary) and use what interactive ones leave. Without
  resident batch programs every program is gated and paused as above.
- A program leaves when it ends (the gateway says so: DELETE, SDK exit, table TTL; in the simulator, its
  last call).

Invariants: `working` holds exactly the resident programs and `inflight` has the same keys; `total` is
the sum of `working`'s values; `batch` is a subset of `working`'s keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from autellix.policy.config import PolicyConfig

THRASH_SHARE = 0.01
"""The gate comes into force once more than this share of the expected history was missing: in effect
any recent miss (one whole history missed lifts the running mean to MISS_WEIGHT; ~30 full hits later it
is back under the threshold)."""
MISS_WEIGHT = 0.05
"""Weight of each call in the running mean of the missed share (about the last 20 calls)."""


@dataclass(slots=True)
class ResidencyCounters:
    """Whole-run counts of residency decisions (reported by engines, never read by a decision)."""

    holds_granted: int = 0
    holds_expired: int = 0
    holds_released_pressure: int = 0
    holds_released_cap: int = 0
    programs_gated: int = 0
    programs_paused: int = 0


class ProgramGate:
    def __init__(self, config: PolicyConfig, capacity: int, counters: ResidencyCounters) -> None:
        self.high = config.admit_high * capacity
        self.low = config.admit_low * capacity
        self.counters = counters
        self.working: dict[str, int] = {}
        self.total = 0
        self.inflight: dict[str, int] = {}
        """Resident program -> its calls admitted here and not finished (0: at a tool boundary)."""
        self.closed = False
        self.in_force = False
        self.missed = 0.0
        """Running mean of the share of expected history that returning holdable programs missed."""
        self.holdable: set[str] = set()
        """Programs whose last call ended with a hold (their next call's cache hit is the signal)."""
        self.batch: set[str] = set()
        """Resident batch programs (while any is, interactive programs pass the gate and are not paused)."""

    # -- the thrash signal -----------------------------------------------------------------------------

    def note_holdable(self, program_id: str) -> None:
        """The program's last call ended with a hold: its next call's hit feeds the signal."""
        self.holdable.add(program_id)

    def observe(self, program_id: str, expected_tokens: int, hit_tokens: int) -> None:
        """A call of the program was admitted: it expected `expected_tokens` of its history cached and
        found `hit_tokens`. Counts when the program was worth a hold."""
        if program_id in self.holdable and expected_tokens > 0:
            self.holdable.discard(program_id)
            share = max(expected_tokens - hit_tokens, 0) / expected_tokens
            self.missed += MISS_WEIGHT * (share - self.missed)

    def thrashing(self) -> bool:
        """Whether the gate is in force (module docstring): a latch, on while holds fail past
        `admit_high`, off once the working sets fall below `admit_low`. It is also the signal that the
        KV cache binds, which the scheduling order reads (LevelPolicy.kv_bound, docs/policy.md rule 8)."""
        if self.in_force:
            if self.total < self.low:
                self.in_force = False
        elif self.missed > THRASH_SHARE and self.total >= self.high:
            self.in_force = True
        return self.in_force

    # -- admission -------------------------------------------------------------------------------------

    def admitted(self, program_id: str) -> bool:
        return program_id in self.working

    def passes(self, batch: bool) -> bool:
        """Whether a program of this class is admitted whatever the working sets say and ahead of the
        programs already waiting: an interactive one while batch programs are resident."""
        return not batch and bool(self.batch)

    def admit(self, program_id: str, blocks: int, idle: bool = False, batch: bool = False) -> bool:
        """Whether a program's call here may join the queues; admits the program if so. `idle`: the
        engine has nothing to run, so holding the program back would only waste it (and across engines
        could deadlock: two programs each resident where the other's next call waits). An interactive
        program (`batch` False) is admitted at once while batch programs are resident."""
        if program_id in self.working:
            return True
        if not idle and not self.passes(batch):
            if self.closed:
                if self.total >= self.low:
                    return False
                self.closed = False
            if self.total and self.total + blocks > self.high and self.thrashing():
                self.closed = True
                return False
        self.working[program_id] = blocks
        self.total += blocks
        self.inflight[program_id] = 0
        if batch:
            self.batch.add(program_id)
        return True

    def started(self, program_id: str) -> None:
        """A call of a resident program joined the queues."""
        if program_id in self.inflight:
            self.inflight[program_id] += 1

    def finished(self, program_id: str) -> None:
        """A call of the program finished here."""
        n = self.inflight.get(program_id)
        if n:
            self.inflight[program_id] = n - 1

    def grow(self, program_id: str, blocks: int) -> None:
        """A resident program's working set is now `blocks` (its latest context)."""
        old = self.working.get(program_id)
        if old is None:
            return
        self.working[program_id] = blocks
        self.total += blocks - old
        if self.total >= self.high and self.thrashing():
            self.closed = True

    def over(self) -> bool:
        """Whether programs must be paused now: the gate is in force and the working sets pass
        `admit_high`."""
        return self.total > self.high and self.thrashing()

    def pause(self) -> list[str]:
        """While `over()`: resident programs at a tool boundary, batch ones first, each class smallest
        working set first, lose residency until the working sets fit; returns them. Interactive ones only
        once no batch program is resident, which may come true inside this call: it must, as nothing
        else would make an engine ask again before its next event."""
        if not self.over():
            return []
        paused = []
        working, batch = self.working, self.batch
        for pid in sorted((p for p, n in self.inflight.items() if n == 0),
                          key=lambda p: (p not in batch, working[p])):
            if self.total <= self.high:
                break
            if batch and pid not in batch:
                break  # interactive, and batch programs are still resident (in flight)
            self.total -= working.pop(pid)
            del self.inflight[pid]
            batch.discard(pid)
            paused.append(pid)
        self.counters.programs_paused += len(paused)
        self.closed = True
        return paused

    def end(self, program_id: str) -> None:
        """The program ended: it is resident no more."""
        self.total -= self.working.pop(program_id, 0)
        self.inflight.pop(program_id, None)
        self.holdable.discard(program_id)
        self.batch.discard(program_id)
