"""Programs, calls and the process table (docs/policy.md, 'Vocabulary and units').

A *program* is one run of an agent; its *calls* are LLM requests, grouped into *threads* (parallel calls
live on different threads). The process table maps program id -> ProgramState and carries what program-level
scheduling needs: attained service, waiting time, engine pin and the active calls.

Invariants:
- `ProgramState.service` and `ProgramState.wait` never decrease: they only change through `finish_call`
  (and the gateway snapshots of `new_call`, which can only raise them). The table's `rule` says how calls
  add up: "total" adds every completed call (service += call.service); "critical_path" is the paper's ATLAS
  max rule, service = max(service, call.start_service + call.service), the longest chain of calls. For a
  sequential program both are the running sum. Wait always follows the critical path,
  wait = max(wait, call.start_wait + call.wait): how long the program itself was held back, not the
  sum of its threads' waits (summing would promote a waiting five-branch program five times as fast).
- `Call.service` and `Call.wait` never reset (the starvation counters that do reset are separate).
- A program with no active call and no activity for `ttl` seconds is dropped by `expire`, so clients that
  never end their session leak nothing.
"""

from __future__ import annotations

import enum
import itertools
import math
import uuid
from dataclasses import dataclass, field
from numbers import Real

SERVICE_RULES: tuple[str, ...] = ("total", "critical_path")
"""How a program's calls add up to its service (ProcessTable's `rule`)."""
MAX_ID = 256
"""Longest program, thread or call id, in characters: the one limit the gateway, the engine plugin's
context (autellix.context) and the table all apply."""


class UnknownProgram(KeyError):
    """No program with this id is in the process table."""

    def __str__(self) -> str:
        return f"unknown program id {self.args[0]!r}"


class CallState(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2


@dataclass(slots=True, eq=False)
class ProgramState:
    """One agent run. `calls` holds only active (not yet finished) calls, keyed by call id."""

    program_id: str
    created: float
    service: float = 0.0
    wait: float = 0.0
    engine: int | None = None
    calls: dict[str, Call] = field(default_factory=dict)
    threads: set[str] = field(default_factory=set)
    last_arrival: float = -math.inf
    last_completion: float = -math.inf
    completed_calls: int = 0
    ephemeral: bool = False
    """An anonymous one-call program: dropped as soon as its call finishes."""
    batch: bool = False
    """The program's class: batch (nobody waits on it: an evaluation, RL rollouts) or interactive (the
    default). Interactive programs go first and keep their KV; batch ones fill the rest (docs/policy.md,
    'Classes')."""

    @property
    def is_parallel(self) -> bool:
        """True once the program has used more than one thread (ATLAS applies)."""
        return len(self.threads) > 1

    def last_activity(self) -> float:
        return max(self.created, self.last_arrival, self.last_completion)


@dataclass(slots=True, eq=False)
class Call:
    """One LLM request of a program's thread.

    `start_service` / `start_wait` are the program's service and wait when the call arrived. The policy
    owns `level`, `level_service` (service inside the current level, for quanta), the starvation
    counters `starve_wait` / `starve_service` (reset on promotion) and `waiting_since` (engine step at
    which the current wait began, or -1 while running).
    """

    call_id: str
    program: ProgramState
    thread: str
    prompt_tokens: int
    arrival: float
    seq: int
    start_service: float
    start_wait: float
    service: float = 0.0
    wait: float = 0.0
    state: CallState = CallState.WAITING
    level: int = 0
    level_service: float = 0.0
    starve_wait: float = 0.0
    starve_service: float = 0.0
    waiting_since: int = -1
    preemptions: int = 0
    remaining: float = math.inf
    """Remaining service of the whole program, if an oracle knows it (SRPT only)."""
    yields: bool = False
    """Queued behind every interactive call: its program is batch and the call has not yet waited
    `batch_wait_steps` (policy/levels.py, "Classes"). Set by the policy at entry."""
    version: int = 0
    """Bumped whenever a queued entry for this call becomes stale (lazy heap invalidation)."""

    @property
    def program_id(self) -> str:
        return self.program.program_id

    @property
    def attained(self) -> float:
        """Program service seen by this call: its start snapshot plus its own service."""
        return self.start_service + self.service

    def __repr__(self) -> str:
        return (f"Call({self.program_id}/{self.call_id}, level={self.level}, "
                f"service={self.service:g}, state={self.state.name})")


class ProcessTable:
    """program id -> ProgramState, with call creation, completion (`rule`, see the module docstring) and TTL
    expiry. Build it with the policy's settings: `PolicyConfig.new_table()`."""

    def __init__(self, ttl: float = 600.0, rule: str = "total") -> None:
        if not ttl > 0:
            raise ValueError(f"ttl: must be > 0 seconds, got {ttl}")
        if rule not in SERVICE_RULES:
            raise ValueError(f"rule: must be one of {list(SERVICE_RULES)}, got {rule!r}")
        self.ttl = ttl
        self.critical_path = rule == "critical_path"
        self.programs: dict[str, ProgramState] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.programs)

    def __contains__(self, program_id: str) -> bool:
        return program_id in self.programs

    def start(self, program_id: str | None = None, now: float = 0.0) -> ProgramState:
        """Open a program (idempotent for an existing id); a new random id when none is given."""
        if program_id is None:
            program_id = uuid.uuid4().hex
        _check_id("program_id", program_id)
        program = self.programs.get(program_id)
        if program is None:
            program = self.programs[program_id] = ProgramState(program_id, created=now)
        return program

    def get(self, program_id: str) -> ProgramState:
        try:
            return self.programs[program_id]
        except KeyError:
            raise UnknownProgram(program_id) from None

    def end(self, program_id: str) -> ProgramState:
        """Drop a program. Its active calls keep running; finishing them no longer touches the table."""
        program = self.get(program_id)
        del self.programs[program_id]
        return program

    def new_call(self, program_id: str | None, call_id: str | None = None, thread: str = "0",
                 prompt_tokens: int = 0, now: float = 0.0, service: float | None = None,
                 wait: float | None = None, batch: bool | None = None) -> Call:
        """Register an arriving call. An unseen program id opens the program implicitly; None makes an
        anonymous one-call program. `service` / `wait` are snapshots sent by a gateway that keeps the
        global table; when given they raise this table's values (which never decrease). `batch`, when
        given, sets the program's class (a call that names none leaves it as it was)."""
        if not isinstance(prompt_tokens, int) or isinstance(prompt_tokens, bool) or prompt_tokens < 0:
            raise ValueError(f"prompt_tokens: must be a non-negative int, got {prompt_tokens!r}")
        program = self.start(program_id, now)
        program.ephemeral = program_id is None
        if service is not None:
            program.service = max(program.service, _non_negative("service", service))
        if wait is not None:
            program.wait = max(program.wait, _non_negative("wait", wait))
        if batch is not None:
            program.batch = bool(batch)
        call_id = uuid.uuid4().hex if call_id is None else call_id
        _check_id("call_id", call_id)
        if call_id in program.calls:
            raise ValueError(f"call_id: {call_id!r} is already active in program {program.program_id!r}")
        call = Call(call_id, program, str(thread), prompt_tokens, now, next(self._seq),
                    start_service=program.service, start_wait=program.wait)
        program.calls[call_id] = call
        program.threads.add(call.thread)
        program.last_arrival = now
        return call

    def finish_call(self, call: Call, now: float = 0.0) -> None:
        """Complete a call and forget it: its service adds to the program by the table's rule, its wait
        by the critical path."""
        program = call.program
        call.state = CallState.FINISHED
        if self.critical_path:
            program.service = max(program.service, call.start_service + call.service)
        else:
            program.service += call.service
        program.wait = max(program.wait, call.start_wait + call.wait)
        program.calls.pop(call.call_id, None)
        program.completed_calls += 1
        program.last_completion = now
        if program.ephemeral and not program.calls:
            self.programs.pop(program.program_id, None)

    def expire(self, now: float) -> list[str]:
        """Drop programs idle (no active call, no activity) for at least `ttl`; return their ids."""
        cutoff = now - self.ttl
        dead = [pid for pid, p in self.programs.items() if not p.calls and p.last_activity() <= cutoff]
        for pid in dead:
            del self.programs[pid]
        return dead


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise ValueError(f"{name}: must be a non-empty string of at most {MAX_ID} characters, "
                         f"got {value!r:.80}")


def _non_negative(name: str, value: object) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r:.80}")
    return float(value)
