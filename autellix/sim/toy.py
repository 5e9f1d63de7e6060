"""Unit-step executor: the paper's toy examples, driven by the real policy code.

An engine runs at most `max_batch` calls per unit step; a call needs a given number of steps (each step
is one unit of service); a program's next stage of calls arrives when every call of its current stage has
finished (a stage with several calls = parallel threads). Each step: arrivals, then the policy's batch
decision (admit / preempt), then one unit of service for every running call, then completions.

Waiting time of a call = steps it spent waiting (before its first run and after preemptions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from autellix.policy import POLICIES, PolicyConfig, SeatBudget, make_policy
from autellix.programs import Call

TOY_CONFIG = PolicyConfig(boundaries=(0, 1, 2, 4, 8, 16, math.inf), preempt_gap=1)
"""The default's geometric levels scaled to unit steps (one level per doubling of service); any better
level preempts, as in the paper's examples."""


@dataclass(frozen=True, slots=True)
class ToyProgram:
    """`stages[k]` lists the step counts of the calls issued together at stage k (parallel threads)."""

    name: str
    stages: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        for stage in self.stages:
            if not stage or any(not isinstance(d, int) or d <= 0 for d in stage):
                raise ValueError(f"stages: every call needs a positive int step count, got {stage!r}")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    max_batch: int
    programs: tuple[ToyProgram, ...]
    policies: tuple[str, ...]
    about: str


SCENARIOS: dict[str, Scenario] = {
    "paper-fig2": Scenario(
        "paper-fig2", 2,
        (ToyProgram("A", ((4,), (3,), (1,), (1,))), ToyProgram("B", ((3,), (3,), (4,))),
         ToyProgram("C", ((1,), (2,))), ToyProgram("D", ((4,),))),
        ("fcfs", "mlfq", "plas", "srpt"),
        "Paper Figure 2: batch size 2, four sequential programs at t=0."),
    "paper-atlas": Scenario(
        "paper-atlas", 1,
        (ToyProgram("B", ((2,), (2,), (2,))), ToyProgram("A", ((2, 2), (1,)))),
        ("fcfs", "mlfq", "atlas", "srpt"),
        "ATLAS example: batch size 1; B makes sequential long calls, A two parallel calls then a third."),
}


@dataclass(slots=True)
class ToyResult:
    policy: str
    total_wait: int
    makespan: int
    waits: dict[str, int] = field(default_factory=dict)
    finish: dict[str, int] = field(default_factory=dict)


def run_toy(programs: Sequence[ToyProgram], policy_name: str, max_batch: int,
            config: PolicyConfig = TOY_CONFIG, max_steps: int = 100_000) -> ToyResult:
    if max_batch < 1:
        raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
    policy = make_policy(policy_name, config)
    table = config.new_table()
    stage = {p.name: 0 for p in programs}
    pending: dict[str, int] = {}  # program -> calls of the current stage not yet finished
    need: dict[Call, int] = {}
    running: list[Call] = []
    result = ToyResult(policy_name, 0, 0)

    def issue(program: ToyProgram, t: int) -> None:
        calls = program.stages[stage[program.name]]
        pending[program.name] = len(calls)
        left = sum(sum(s) for s in program.stages[stage[program.name]:])
        for thread, steps in enumerate(calls):
            call = table.new_call(program.name, f"{program.name}{stage[program.name] + 1}"
                                  + (f".{thread}" if len(calls) > 1 else ""), str(thread), 0, t)
            call.remaining = left
            need[call] = steps
            policy.add(call)

    by_name = {p.name: p for p in programs}
    for program in programs:
        issue(program, 0)
    t = 0
    while need:
        if t >= max_steps:
            raise RuntimeError(f"toy run did not finish in {max_steps} steps")
        policy.apply(policy.schedule(running, SeatBudget(max_batch, len(running))), running)
        for call in running:
            policy.charge(call, decode_tokens=1)
            need[call] -= 1
        policy.tick(1)
        t += 1
        for call in [c for c in running if need[c] == 0]:
            running.remove(call)
            del need[call]
            policy.remove(call)
            table.finish_call(call, t)
            result.waits[call.call_id] = int(call.wait)
            result.finish[call.call_id] = t
            name = call.program_id
            pending[name] -= 1
            if pending[name] == 0 and stage[name] + 1 < len(by_name[name].stages):
                stage[name] += 1
                issue(by_name[name], t)
    result.total_wait = sum(result.waits.values())
    result.makespan = t
    return result


def run_scenario(name: str, policies: Sequence[str] | None = None) -> dict[str, ToyResult]:
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"scenario: unknown {name!r}; choose one of {sorted(SCENARIOS)}") from None
    chosen = list(policies or scenario.policies)
    for p in chosen:
        if p not in POLICIES:
            raise ValueError(f"policy: unknown {p!r}; choose one of {sorted(POLICIES)}")
    return {p: run_toy(scenario.programs, p, scenario.max_batch) for p in chosen}
