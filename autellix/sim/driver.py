"""ProgramRun: drives one agent program through the simulator, issuing calls as dependencies finish.

A call is *ready* when all its `depends_on` calls have finished; it is issued `tool_pause` + `issue_delay`
(the request overhead) seconds after the last of them (after the program's arrival for calls without
dependencies). Calls on different threads whose dependencies are met run in parallel. The program
completes when its last call does.

The SRPT oracle's knowledge also lives here: `work_left` is the service the program still needs, counted
like the policy counts it (decode tokens + prefill_weight x prompt tokens beyond the prefix-call history,
which a prefix cache would serve).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autellix.sim.request import SimCall
from autellix.workloads import ProgramSpec


@dataclass(slots=True, eq=False)
class ProgramRun:
    spec: ProgramSpec
    prefill_weight: float
    issue_delay: float = 0.0
    batch: bool = False
    """The program's class (ProgramState.batch): set on each call's table entry."""
    deps_left: list[int] = field(default_factory=list)
    children: list[list[int]] = field(default_factory=list)
    sims: list[SimCall | None] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    done: int = 0
    finished: float = -1.0
    work_left: float = 0.0

    def __post_init__(self) -> None:
        calls = self.spec.calls
        self.deps_left = [len(c.depends_on) for c in calls]
        self.children = [[] for _ in calls]
        for i, c in enumerate(calls):
            for d in c.depends_on:
                self.children[d].append(i)
        self.sims = [None] * len(calls)
        self.costs = [self.work(i) for i in range(len(calls))]
        self.work_left = sum(self.costs)

    @property
    def program_id(self) -> str:
        return self.spec.program_id

    def work(self, i: int) -> float:
        c = self.spec.calls[i]
        return c.output_tokens + self.prefill_weight * self.spec.new_prompt_tokens(i)

    def roots(self) -> list[tuple[float, int]]:
        """(issue time, call index) of the calls with no dependencies."""
        arrival, calls = self.spec.arrival, self.spec.calls
        start = arrival + self.issue_delay
        return [(start + calls[i].tool_pause, i) for i, n in enumerate(self.deps_left) if n == 0]

    def chain(self, i: int, block: int) -> tuple[tuple, int]:
        """(prefix-cache chain, its block count) of call i: its prefix call's chain plus the full
        `block`-token blocks of the prefix call's own part (its prompt + output). block=0: no cache."""
        p = self.spec.calls[i].prefix_call
        if not block or p is None:
            return (), 0
        parent = self.sims[p]
        assert parent is not None and parent.done, "a prefix call finishes before its successors issue"
        base = (parent.prompt + parent.output) // block
        if base > parent.base:
            return parent.chain + ((parent, base - parent.base),), base
        return parent.chain, parent.base

    def complete(self, i: int, now: float) -> list[tuple[float, int]]:
        """Call i finished at `now`: (issue time, index) of the calls this makes ready."""
        self.done += 1
        self.work_left -= self.costs[i]
        if self.done == len(self.sims):
            self.finished = now
        calls = self.spec.calls
        ready = []
        for j in self.children[i]:
            self.deps_left[j] -= 1
            if self.deps_left[j] == 0:
                ready.append((now + self.issue_delay + calls[j].tool_pause, j))
        return ready
