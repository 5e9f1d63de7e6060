"""A cluster of simulated engines behind a load balancer, driven by one global event loop.

Entities: the gateway (cluster-wide ProcessTable + balancer), E engines (each with its own policy and
engine-local table, like a vLLM engine running the plugin), and one ProgramRun per agent program.

The gateway's table is shared by every engine's calls: it holds each program's attained service and
wait, and on every call it passes them to the chosen engine as snapshots (`vllm_xargs`, docs/gateway.md);
the engine-local table takes the larger of its own value and the snapshot. Why not let the engines'
policies use the gateway's Program objects directly: ATLAS gang leveling walks `program.calls` and moves
siblings inside *its own* queues, so a sibling waiting on another engine would be dequeued from the
wrong policy. The per-engine table is what the real plugin keeps anyway. With one engine the two tables
would hold identical values, so the engine simply uses the gateway's (saving half the bookkeeping).

Events live in one heap ordered by (time, phase): at equal times every engine boundary is applied first
(phase 0: completions make new calls ready), then calls are issued (phase 1: routed into an engine's
inbox, cutting its planned span to the step in progress), then engines whose hold deadline is due wake
(phase 2: the same cut), then engines plan their next step (phase 3), so a plan sees every call that
arrived at its instant.

Open loop: programs arrive at their spec's arrival times. Closed loop (`concurrency` N): N programs are
in flight from time 0; when one ends the next starts at once (its arrival is that instant), and the run
stops at the `stop_after`-th program completion, as an agent fleet (an evaluation, RL rollouts) keeps N
agents busy. Mixed classes (`interactive`, docs/simulator.md "Interactive and batch"): the closed-loop
fleet is batch, and an open-loop stream of interactive programs arrives beside it, its arrival times
counted from the fleet's `concurrency`-th completion (the fleet has turned over once: a steady state);
the run stops at the last interactive program's completion. A program's end reaches every engine
(`SimEngine.end_program`), as the gateway's DELETE does.
With `thunderagent` a PauseGate in the gateway holds back the calls of paused programs.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Sequence

from autellix.balance import make_balancer
from autellix.policy import PolicyConfig, make_policy
from autellix.policy.pause_gate import PauseGate
from autellix.policy.residency import ResidencyPolicy, residency_for
from autellix.policy.systems import system
from autellix.sim.config import EngineConfig
from autellix.sim.cost import CostModel
from autellix.sim.driver import ProgramRun
from autellix.sim.engine import SimEngine
from autellix.sim.request import SimCall
from autellix.sim.result import ProgramOutcome, SimCallOutcome, SimResult
from autellix.workloads import ProgramSpec

BOUNDARY, ISSUE, WAKE, PLAN = 0, 1, 2, 3
IDLE, PLANNING, BUSY = 0, 1, 2


class Cluster:
    def __init__(self, programs: Sequence[ProgramSpec], policy: str, cost: CostModel, engines: int = 1,
                 balancer: str = "locality", config: EngineConfig | None = None,
                 policy_config: PolicyConfig | None = None, cpu_blocks: int = 0,
                 concurrency: int | None = None, stop_after: int | None = None,
                 interactive: Sequence[ProgramSpec] = ()) -> None:
        if engines < 1:
            raise ValueError(f"engines: must be >= 1, got {engines}")
        if not programs:
            raise ValueError("programs: need at least one program")
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency: must be >= 1, got {concurrency}")
        if stop_after is not None and not 1 <= stop_after <= len(programs):
            raise ValueError(f"stop_after: must be in [1, {len(programs)}], got {stop_after}")
        if interactive and (concurrency is None or stop_after is not None):
            raise ValueError("interactive: needs a closed-loop fleet (concurrency) and no stop_after")
        self.config = config or EngineConfig()
        self.system = system(policy)
        self.policy_config = policy_config or PolicyConfig()
        caching = self.system.prefix_caching and self.config.prefix_caching
        gpu_blocks = self.config.gpu_blocks or cost.kv_capacity_blocks
        cpu = self.config.cpu_blocks if self.config.cpu_blocks is not None else cpu_blocks
        self.engines = [SimEngine(i, make_policy(self.system.order, self.policy_config), cost,
                                  self.config, caching, gpu_blocks, cpu, *self._residency(gpu_blocks))
                        for i in range(engines)]
        self.loads = [e.load for e in self.engines]
        self.balancer = make_balancer(balancer)
        self.table = self.policy_config.new_table()
        self.shared = engines == 1
        if self.shared:  # one engine: its table would mirror the gateway's exactly, so share it
            self.engines[0].table = self.table
        delay = self.config.request_overhead(cost)
        batch = bool(interactive)
        self.runs = [ProgramRun(p, self.policy_config.prefill_weight, delay, batch) for p in programs]
        self.stream = [ProgramRun(p, self.policy_config.prefill_weight, delay) for p in interactive]
        """The interactive programs (open loop, after the fleet's warm-up)."""
        self.stream_ids = {r.program_id for r in self.stream}
        self.stream_left = len(self.stream)
        self.live: dict[str, ProgramRun] = {}
        """Started programs not yet ended, by id."""
        self.state = [IDLE] * engines
        self.wake_at: list[float | None] = [None] * engines
        self.concurrency = concurrency
        self.stop_after = stop_after
        self.started = 0
        self.completed = 0
        self.gate = PauseGate(gpu_blocks * cost.block_tokens * engines, self.policy_config.admit_high) \
            if self.system.pause_gate else None
        self.gated: dict[str, list[tuple[ProgramRun, int]]] = {}
        """Ready calls of programs the PauseGate holds back, in issue order."""
        self._heap: list[tuple] = []
        self._seq = itertools.count()
        self.events = 0

    def _residency(self, gpu_blocks: int) -> tuple[ResidencyPolicy | None, bool]:
        """(the engine's residency policy, whether ended programs' cache is evicted first)."""
        residency = residency_for(self.system.residency, self.policy_config, gpu_blocks)
        return residency, residency is not None and residency.soft

    def _push(self, t: float, phase: int, a: object, b: object) -> None:
        heapq.heappush(self._heap, (t, phase, next(self._seq), a, b))

    def run(self) -> SimResult:
        """Simulate until every program completes."""
        started = time.perf_counter()
        for _ in range(self.concurrency or len(self.runs)):
            self._start(0.0)
        heap, pop = self._heap, heapq.heappop
        while heap and self.completed != self.stop_after and (self.stream_left or not self.stream):
            t, phase, _, a, b = pop(heap)
            self.events += 1
            if phase == BOUNDARY:
                if b != a.version:
                    continue  # the span was truncated and rescheduled
                for sc in a.finish_span():
                    self._completed(sc, t)
                self.state[a.index] = PLANNING
                self._push(t, PLAN, a, None)
            elif phase == ISSUE:
                self._issue(a, b, t)
            elif phase == WAKE:
                self._wake(a, t)
            else:
                end = a.plan(t)
                if end is None:
                    self.state[a.index] = IDLE
                else:
                    self.state[a.index] = BUSY
                    self._push(end, BOUNDARY, a, a.version)
                self._arm(a)
        if self.stream_left:
            raise RuntimeError(f"the batch fleet ran out of programs with {self.stream_left} interactive "
                               "program(s) unfinished: draw more fleet programs")
        if self.stop_after is None and not self.stream:
            unfinished = sum(1 for r in self.runs if r.finished < 0)
            if unfinished:
                raise RuntimeError(f"simulation ended with {unfinished} unfinished program(s)")
        return self._result(time.perf_counter() - started)

    def _start(self, now: float) -> None:
        """Start the next program: at its own arrival (open loop) or now (closed loop)."""
        if self.started == len(self.runs):
            return
        run = self.runs[self.started]
        self.started += 1
        self.live[run.program_id] = run
        if self.concurrency is not None:
            run.spec = run.spec.retimed(now)
        for t, i in run.roots():
            self._push(t, ISSUE, run, i)

    def _start_stream(self, now: float) -> None:
        """The interactive stream begins: its arrivals are counted from `now`."""
        for run in self.stream:
            run.spec = run.spec.retimed(now + run.spec.arrival)
            self.live[run.program_id] = run
            for t, i in run.roots():
                self._push(t, ISSUE, run, i)

    def _arm(self, engine: SimEngine) -> None:
        """Schedule a wake-up at the engine's next hold deadline (once per deadline)."""
        wake = engine.next_wake()
        if wake is not None and wake != self.wake_at[engine.index]:
            self.wake_at[engine.index] = wake
            self._push(wake, WAKE, engine, None)

    def _wake(self, engine: SimEngine, now: float) -> None:
        """A hold deadline is due: the engine plans at the end of the step in progress (or now, idle)."""
        i = engine.index
        if self.wake_at[i] != now:
            return  # superseded by a later arm
        self.wake_at[i] = None
        if self.state[i] == IDLE:
            self.state[i] = PLANNING
            self._push(now, PLAN, engine, None)
        elif self.state[i] == BUSY and engine.truncate(now):
            self._push(engine.span_end, BOUNDARY, engine, engine.version)

    def _issue(self, run: ProgramRun, i: int, now: float) -> None:
        """The gateway routes a ready call: global table entry, balancer, engine-local table, inbox."""
        spec = run.spec.calls[i]
        pid, cid, thread = run.program_id, str(i), str(spec.thread)
        if self.gate is not None and not self._gate_pass(run, i, now):
            return
        gcall = self.table.new_call(pid, cid, thread, spec.prompt_tokens, now, batch=run.batch)
        index = self.balancer.pick(gcall.program, spec.prompt_tokens, self.loads)
        engine = self.engines[index]
        if self.shared:
            call = gcall
        else:
            call = engine.table.new_call(pid, cid, thread, spec.prompt_tokens, now,
                                         service=gcall.start_service, wait=gcall.start_wait, batch=run.batch)
        call.remaining = run.work_left  # the SRPT oracle's knowledge; other policies ignore it
        chain, base = run.chain(i, engine.res.block if engine.kv.caching else 0)
        p = spec.prefix_call
        sc = SimCall(call, gcall, i, spec.prompt_tokens, spec.output_tokens, chain, base, now,
                     None if p is None else run.sims[p])
        run.sims[i] = sc
        engine.receive(sc)
        self._replan(engine, now)

    def _replan(self, engine: SimEngine, now: float) -> None:
        """Something the engine plans with changed at `now`: it plans at the end of the step in progress
        (or now, idle), as stepping one step at a time would."""
        state = self.state[engine.index]
        if state == IDLE:
            self.state[engine.index] = PLANNING
            self._push(now, PLAN, engine, None)
        elif state == BUSY and engine.truncate(now):
            self._push(engine.span_end, BOUNDARY, engine, engine.version)

    def _completed(self, sc: SimCall, now: float) -> None:
        """The gateway learns a call's service and wait, then the program issues what became ready."""
        gcall, run = sc.gcall, self.live[sc.gcall.program_id]
        if not self.shared:  # (a shared table was already updated by the engine)
            gcall.service, gcall.wait = sc.call.service, sc.call.wait
            self.table.finish_call(gcall, now)
        for t, j in run.complete(sc.index, now):
            self._push(t, ISSUE, run, j)
        if self.gate is not None:
            self.gate.finished(run.program_id, sc.prompt + sc.output)
        if run.finished >= 0:
            fleet = run.program_id not in self.stream_ids
            if fleet:
                self.completed += 1
                if self.completed == self.concurrency and self.stream:
                    self._start_stream(now)
            else:
                self.stream_left -= 1
            del self.live[run.program_id]
            self.table.end(run.program_id)
            calls = [c for c in run.sims if c is not None]
            for engine in self.engines:
                if engine.end_program(run.program_id, calls) and engine is not self.engines[sc.engine]:
                    self._replan(engine, now)  # its gate may let a waiting program in now
                if not self.shared:
                    engine.table.programs.pop(run.program_id, None)
            if self.gate is not None:
                self.gate.end(run.program_id)
            if self.concurrency is not None and fleet:
                self._start(now)
        if self.gate is not None:
            self._rebalance(now)

    def _gate_pass(self, run: ProgramRun, i: int, now: float) -> bool:
        """ThunderAgent's proxy: whether call i of the program goes to an engine now (else it waits)."""
        gate, pid, prompt = self.gate, run.program_id, run.spec.calls[i].prompt_tokens
        if pid not in gate.programs:
            gate.arrive(pid, prompt)
        if not gate.active(pid):
            self.gated.setdefault(pid, []).append((run, i))
            self._rebalance(now)
            return False
        gate.started(pid, prompt)
        return True

    def _rebalance(self, now: float) -> None:
        """ThunderAgent's memory check: resumed programs' held-back calls are issued now."""
        for pid in self.gate.rebalance():
            for run, i in self.gated.pop(pid, ()):
                self._push(now, ISSUE, run, i)

    def _result(self, wall_s: float) -> SimResult:
        programs, calls = [], []
        for run in self.runs[:self.started] + self.stream:
            spec = run.spec
            if run.finished >= 0:  # (a closed loop stops with programs in flight: left out)
                programs.append(ProgramOutcome(spec.program_id, spec.kind, spec.num_threads,
                                               spec.num_calls, spec.arrival, run.finished,
                                               spec.total_output_tokens, run.batch))
            for sc in run.sims:
                if sc is None or not sc.done:
                    continue
                calls.append(SimCallOutcome(spec.program_id, sc.index, sc.engine, sc.issued, sc.first_token,
                                         sc.finished, sc.prompt, sc.output, sc.hit_tokens, sc.wait_s,
                                         sc.preemptions, sc.swaps, sc.prefilled,
                                         spec.new_prompt_tokens(sc.index)))
        return SimResult(self.system.name, programs, calls, [e.counters() for e in self.engines],
                         wall_s, self.events)


def simulate(programs: Sequence[ProgramSpec], policy: str, cost: CostModel, engines: int = 1,
             balancer: str = "locality", config: EngineConfig | None = None,
             policy_config: PolicyConfig | None = None, cpu_blocks: int = 0,
             concurrency: int | None = None, stop_after: int | None = None,
             interactive: Sequence[ProgramSpec] = ()) -> SimResult:
    """Run `programs` on `engines` simulated engines under `policy` (a name in policy/systems.py's SYSTEMS):
    open loop (arrival times as given), or closed loop with `concurrency` programs in flight until
    `stop_after` programs completed, or a batch fleet beside an `interactive` stream (module docstring)."""
    return Cluster(programs, policy, cost, engines, balancer, config, policy_config, cpu_blocks,
                   concurrency, stop_after, interactive).run()
