"""The policy interface every engine drives: the simulator, the vLLM plugin and the unit-step executor.

Life of a call inside a policy:
    add(call)              -> WAITING in its entry queue
    schedule(running, b)   -> Batch: waiting calls to admit, running calls to preempt
    on_run(call)           -> RUNNING (the engine applied the decision)
    charge(call, d, p)     -> service grows; the call may be demoted
    on_preempt(call)       -> WAITING again, FCFS position by arrival
    tick(steps)            -> the wait clock advances; starving waiting calls are promoted
    remove(call)           -> gone (finished or aborted); its wait is folded into `call.wait`

Invariants: a call is in exactly one of {waiting queues, running (owned by the engine), removed}; the
policy never loses or duplicates a call; `call.service` never decreases.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autellix.policy.config import PolicyConfig
from autellix.programs import Call, CallState


class Budget(Protocol):
    """What the engine can still fit this step (seats, KV blocks, token budget)."""

    def fits(self, call: Call) -> bool: ...
    def reserve(self, call: Call) -> None: ...
    def release(self, call: Call) -> None: ...


@dataclass(slots=True)
class SeatBudget:
    """The simplest budget: at most `seats` calls in a batch (vLLM's max_num_seqs)."""

    seats: int
    used: int = 0

    def fits(self, call: Call) -> bool:
        return self.used < self.seats

    def reserve(self, call: Call) -> None:
        self.used += 1

    def release(self, call: Call) -> None:
        self.used -= 1


@dataclass(slots=True)
class Batch:
    """A scheduling decision. `admitted` is in priority order; `preempted` worst first."""

    admitted: list[Call] = field(default_factory=list)
    preempted: list[Call] = field(default_factory=list)


class Policy(ABC):
    """Engine-agnostic scheduling policy. Subclasses define queue order and service accounting."""

    name: str = "policy"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.step = 0
        """The wait clock, in engine steps (see PolicyConfig for units)."""
        self.num_waiting = 0
        self.on_level_change: Callable[[Call], None] | None = None
        """Called after a queued or running call changes level (demotion, gang move, promotion), so an
        engine that mirrors priorities (vLLM's request.priority) re-syncs exactly the calls that moved."""

    # -- queue order, defined by subclasses ------------------------------------------------------

    @abstractmethod
    def _enqueue(self, call: Call) -> None:
        """Put a WAITING call into its queue."""

    @abstractmethod
    def _dequeue(self, call: Call) -> None:
        """Take a WAITING call out of its queue."""

    @abstractmethod
    def waiting_order(self) -> Iterator[Call]:
        """Waiting calls, best first. Lazy: schedule() stops early."""

    def order(self, call: Call) -> tuple[float, int]:
        """A call's FCFS place among calls of equal priority (an engine's queue breaks ties by it)."""
        return (0.0, call.seq)

    @abstractmethod
    def rank(self, call: Call) -> tuple:
        """Total order key, lower runs first; a running call ranks before a waiting one it ties with."""

    @abstractmethod
    def outranks(self, waiter: Call, victim: Call) -> bool:
        """Whether waiting `waiter` is clearly better than running `victim` (preemption pays)."""

    @abstractmethod
    def priority(self, call: Call) -> int:
        """Integer priority for engines that take one (vLLM's request.priority; lower first)."""

    def entry(self, call: Call) -> None:  # noqa: B027 (optional hook: most policies keep no per-call state)
        """Set the policy's per-call state on arrival (entry level, etc.)."""

    def charge(self, call: Call, decode_tokens: int = 0, prefill_tokens: int = 0) -> float:
        """Credit service to a call: decode tokens + prefill_weight x computed prompt tokens."""
        if decode_tokens < 0 or prefill_tokens < 0:
            raise ValueError(f"charge: token counts must be >= 0, got decode_tokens={decode_tokens}, "
                             f"prefill_tokens={prefill_tokens}")
        amount = self.config.service(decode_tokens, prefill_tokens)
        call.service += amount
        call.starve_service += amount
        return amount

    def next_event_step(self) -> int | None:
        """The earliest future step at which tick() would change the queues (None: never)."""
        return None

    # -- lifecycle ---------------------------------------------------------------------------------

    def add(self, call: Call) -> None:
        if call.state is not CallState.WAITING or call.waiting_since >= 0:
            raise ValueError(f"add: {call!r} is not a new call")
        self.entry(call)
        self._start_waiting(call)

    def remove(self, call: Call) -> None:
        """Forget a call (finished or aborted). Safe for running and waiting calls."""
        if call.waiting_since >= 0:
            self._dequeue(call)
            self._stop_waiting(call)
        call.version += 1

    def on_run(self, call: Call) -> None:
        if call.waiting_since < 0:
            raise ValueError(f"on_run: {call!r} is not waiting")
        self._dequeue(call)
        self._stop_waiting(call)
        call.state = CallState.RUNNING

    def on_preempt(self, call: Call) -> None:
        if call.state is not CallState.RUNNING:
            raise ValueError(f"on_preempt: {call!r} is not running")
        call.preemptions += 1
        call.state = CallState.WAITING
        self._start_waiting(call)

    def tick(self, steps: int = 1) -> None:
        """Advance the wait clock by `steps` engine steps."""
        self.step += steps

    def current_wait(self, call: Call) -> float:
        """Total wait of a call including its current waiting period."""
        return call.wait + (self.step - call.waiting_since if call.waiting_since >= 0 else 0)

    def _start_waiting(self, call: Call) -> None:
        call.waiting_since = self.step
        self._enqueue(call)
        self.num_waiting += 1

    def _stop_waiting(self, call: Call) -> None:
        waited = self.step - call.waiting_since
        call.wait += waited
        call.starve_wait += waited
        call.waiting_since = -1
        call.version += 1
        self.num_waiting -= 1

    # -- batch formation ---------------------------------------------------------------------------

    def schedule(self, running: Sequence[Call], budget: Budget) -> Batch:
        """Strict-priority batch formation (docs/policy.md, 'Rules', 6).

        Walk waiting calls best first; admit each that fits; when one does not fit, preempt running
        calls it clearly outranks (worst first, at most `max_preemptions` per call to schedule) until it
        fits; stop at the first call that still does not fit. `running` holds the calls the engine
        offers as victims (those whose KV survives a preemption); all running calls already hold
        their resources in `budget`. Decisions are returned, not applied: the engine calls on_run /
        on_preempt for what it actually does.
        """
        batch = Batch()
        victims = sorted(running, key=self.rank)  # best first; victims[-1] is the worst
        preempt_left = self.config.max_preemptions
        for call in self.waiting_order():
            while not budget.fits(call):
                if not (preempt_left and victims and self.outranks(call, victims[-1])):
                    return batch
                victim = victims.pop()
                budget.release(victim)
                batch.preempted.append(victim)
                preempt_left -= 1
            budget.reserve(call)
            batch.admitted.append(call)
        return batch

    def apply(self, batch: Batch, running: list[Call]) -> None:
        """Carry out a decision for an engine that can always do what it was told: preempt, then admit,
        keeping `running` (the engine's running list) in step."""
        for call in batch.preempted:
            running.remove(call)
            self.on_preempt(call)
        for call in batch.admitted:
            self.on_run(call)
            running.append(call)
