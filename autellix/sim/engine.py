"""One simulated vLLM engine: a policy's strict-priority batches on modelled KV memory and step times.

Life of a step (one scheduler iteration), the same in both modes:
  plan:     new calls join the policy; memory pressure preempts the worst running call (like vLLM) until
            the decodes of this step fit; policy.schedule() admits / preempts against a SimBudget;
            the batch is composed (decodes 1 token each, prefill chunks share the token budget in
            admission order) and timed by the cost model.
  boundary: KV grows; prefill chunks land; calls that finished prefill emit their first token and decode;
            service is charged (prefill_weight x computed tokens, 1 per decoded token); completions
            leave; policy.tick() advances the wait clock.

Event fast-forward: between events the batch is fixed, so a *span* of n pure-decode steps is planned at
once and timed in closed form (cost.decode_run_time). A span ends at the earliest of: a call's
completion or quantum expiry (DecodeSet heap), the policy's next promotion (next_event_step), KV
exhaustion (DecodeSet.steps_within), or an arrival (the cluster truncates the span to the step in
progress). Steps with prefill chunks or swaps are single-step spans. Why this equals stepping one at a
time: schedule() returns the same (empty) batch on every step of a span, because waiting calls change only
by arrivals and promotions, running levels only at quantum expiry, and free KV only shrinks.

Residency (holding.py, policy/residency.py): at plan, expired holds go and the gate admits programs;
held blocks give way before a waiting call is refused (SimBudget.short, then _schedule) or a running
call is preempted for memory; a hold's deadline is an event like an arrival (the cluster wakes the engine
there), so fast-forward still equals stepping one at a time.

Lazy service: decode tokens are charged to the policy only when it could observe them (a call's own
event, preemption, schedule() for policies whose rank reads service, and for gang policies whenever a
sibling's level may move); charging.py shows why this equals charging every step. Admission, preemption and
completion of calls live in running.py, their KV bookkeeping in residency.py.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from itertools import islice

from autellix.policy import Policy
from autellix.policy.levels import LevelPolicy
from autellix.policy.residency import ResidencyPolicy
from autellix.programs import Call
from autellix.sim.budget import SimBudget
from autellix.sim.charging import add_gang_siblings, charge_event_step
from autellix.sim.config import EngineConfig
from autellix.sim.cost import CostModel
from autellix.sim.holding import EngineHolding
from autellix.sim.kv import KVCache
from autellix.sim.request import DECODE, SimCall
from autellix.sim.residency import Residency
from autellix.sim.running import RunningCalls
from autellix.sim.stats import EngineStats


class SimEngine(RunningCalls):
    """One engine's steps. The cluster calls receive / truncate / plan / finish_span / end_program."""

    def __init__(self, index: int, policy: Policy, cost: CostModel, config: EngineConfig,
                 caching: bool, gpu_blocks: int, cpu_blocks: int,
                 residency: ResidencyPolicy | None = None, demote_ended: bool = False) -> None:
        kv = KVCache(gpu_blocks, cpu_blocks, caching, config.kv_offload)
        res = Residency(kv, cost.block_tokens)
        holding = EngineHolding(residency, res, demote_ended) if residency else None
        if residency is not None and residency.gate is not None and isinstance(policy, LevelPolicy):
            policy.bind_kv(residency.gate.thrashing)  # the order adapts to the resource that binds
        super().__init__(index, policy, res, holding, config.swap != "recompute")
        self.cost = cost
        self.config = config
        self.kv = kv
        self.watermark = int(gpu_blocks * config.watermark)
        self.inbox: list[SimCall] = []
        self.version = 0
        self.gang = bool(getattr(policy, "gang", False))
        self.batched_swap = config.swap == "batched"
        # the planned span
        self.span_start = self.span_end = 0.0
        self.span_steps = 0
        self.span_chunks: list[tuple[SimCall, int]] = []
        self._span_dec = self._span_ctx = 0

    def counters(self) -> EngineStats:
        """This engine's counters so far. Blocks stored in the host tier are the KV cache's own count:
        their copy is never charged to a step (vLLM stores offloaded KV asynchronously, beside compute;
        loads are charged, a hit waits for them)."""
        self.stats.offload_out_blocks = self.kv.offloaded
        if self.holding is not None:
            self.stats.add_residency(self.holding.policy.counters)
        return self.stats

    # -- arrivals -------------------------------------------------------------------------------------

    def receive(self, sc: SimCall) -> None:
        """A call routed here; it joins the policy at the next step boundary."""
        need = self.res.blocks(sc.prompt + sc.output)  # its chain must be resident too
        if need > self.kv.gpu_blocks - self.watermark:
            raise ValueError(f"call {sc.call.program_id}/{sc.index} needs {need} KV blocks; the engine "
                             f"has {self.kv.gpu_blocks - self.watermark}")
        sc.engine = self.index
        self.sims[sc.call] = sc
        self.load.active += 1
        if self.holding is None or self.holding.receive(sc):
            self.inbox.append(sc)

    def truncate(self, now: float) -> bool:
        """Cut the planned span after the step in progress at `now`; True if the boundary moved."""
        if self.span_steps <= 1 or now >= self.span_end:
            return False
        elapsed = now - self.span_start
        k = self.cost.decode_steps_within(elapsed, self._span_dec, self._span_ctx)
        if self.cost.decode_run_time(k, self._span_dec, self._span_ctx) < elapsed:
            k += 1
        k = max(k, 1)
        if k >= self.span_steps:
            return False
        self.span_steps = k
        self.span_end = self.span_start + self.cost.decode_run_time(k, self._span_dec, self._span_ctx)
        self.version += 1
        return True

    # -- planning -------------------------------------------------------------------------------------

    def plan(self, now: float) -> float | None:
        """Form the next step (or span) at `now`; return when it ends, or None when idle."""
        self.now = now
        policy = self.policy
        if self.holding is not None:
            self.holding.expire(now)
            idle = not (self.running or self.inbox or policy.num_waiting)
            self.inbox.extend(self.holding.admit_gated(idle))
        for sc in self.inbox:
            sc.wait_start = now
            policy.add(sc.call)
        self.inbox.clear()
        self._swap_out = self._swap_in = 0
        self._relieve_pressure()
        if policy.num_waiting:
            self._schedule()
        if not self.running:
            if policy.num_waiting and self.next_wake() is None:
                raise RuntimeError(f"engine {self.index}: {policy.num_waiting} call(s) wait but none fits")
            return None
        return self._start_span(now)

    def next_wake(self) -> float | None:
        """When this engine must plan again even if nothing else happens: its earliest hold deadline."""
        return self.holding.next_wake() if self.holding is not None else None

    def free_holds(self, need: int, keep: Collection[str] = ()) -> int:
        """Release soft holds (not those of programs in `keep`) for `need` blocks; the blocks made
        available."""
        return self.holding.free(need, self.now, keep) if self.holding is not None else 0

    def end_program(self, program_id: str, calls: Iterable[SimCall]) -> bool:
        """The gateway says the program ended (its last call finished; `calls`: its records). True when
        that freed blocks or gate room here, so a waiting call may now be admitted."""
        return self.holding is not None and self.holding.end(program_id, calls)

    def _relieve_pressure(self) -> None:
        """While this step's decodes lack KV blocks: release holds, then preempt the lowest-priority
        running call."""
        dec, kv = self.decoding, self.kv
        while dec.n and dec.growth(self.step, 1) > kv.available():
            if self.free_holds(dec.growth(self.step, 1) - kv.available()):
                continue
            self._preempt(self._worst(1)[0])
            self.stats.pressure_preemptions += 1

    def _worst(self, m: int, keep: Callable[[SimCall], bool] | None = None) -> list[SimCall]:
        """The m worst running calls that `keep` accepts (asked worst first), best first."""
        if self.levels is not None:
            return self.levels.worst(m, keep)
        self._flush_all()
        rank = self.policy.rank
        ranked = sorted(self.running, key=lambda sc: rank(sc.call), reverse=True)
        return list(islice((sc for sc in ranked if keep is None or keep(sc)), max(m, 0)))[::-1]

    def _victims(self) -> list[Call]:
        """The running calls a priority preemption may take, best first: the `max_preemptions` worst of
        those whose KV survives it, i.e. decoding calls the swap space can still hold, counted worst first
        (schedule() pops victims worst first, so passing only these gives the same decision). A call still
        prefilling, or one without room on the host, would lose its computed KV and be recomputed:
        docs/policy.md, rule 6."""
        if not self.swap:
            return []
        room = self.kv.cpu_free()

        def keeps_kv(sc: SimCall) -> bool:
            nonlocal room
            if sc.mode != DECODE:
                return False
            need = self.res.base(sc) + self.res.private(sc, self.step)  # the whole context swap_out copies
            if need > room:
                return False
            room -= need
            return True

        return [sc.call for sc in self._worst(self.policy.config.max_preemptions, keeps_kv)]

    def _schedule(self) -> None:
        """The policy's batch against a SimBudget; when a call fits only if holds give way, they are
        released and the batch formed again (budget.py says why that equals releasing them mid-way)."""
        policy = self.policy
        victims = self._victims()
        dec = self.decoding
        seats = self.config.max_num_seqs - len(self.running)
        prefill = sum(sc.prefill_left for sc in self.prefilling)
        tokens = max(self.config.max_batched_tokens - dec.n - prefill, 0)
        holders = self.holding.holders() if self.holding is not None else ()
        freed = None
        while True:
            blocks = self.kv.available() - self.watermark - dec.growth(self.step, 1)
            budget = SimBudget(self.sims, self.res, self.step, seats, tokens, blocks, holders, freed)
            batch = policy.schedule(victims, budget)
            if budget.short is None:
                break
            self.free_holds(*budget.short)
            freed = budget.freed
        for call in batch.preempted:
            self._preempt(self.sims[call])
            self.stats.priority_preemptions += 1
        for call in batch.admitted:
            self._admit(self.sims[call])

    def _start_span(self, now: float) -> float:
        dec, cost = self.decoding, self.cost
        n_dec, ctx = dec.n, dec.ctx(self.step)
        chunks: list[tuple[SimCall, int]] = []
        if self.prefilling:
            left = self.config.max_batched_tokens - n_dec
            for sc in self.prefilling:
                c = sc.prefill_left if sc.prefill_left < left else left
                left -= c
                chunks.append((sc, c))
        if chunks or self._swap_out or self._swap_in or not self.config.fast_forward:
            steps = 1
            t = cost.step_time(n_dec, ctx, [(c, sc.computed) for sc, c in chunks if c > 0],
                               self._swap_out, self._swap_in, self.batched_swap)
        else:
            steps = self._span_limit()
            t = cost.decode_run_time(steps, n_dec, ctx)
        self.span_start, self.span_end, self.span_steps = now, now + t, steps
        self.span_chunks, self._span_dec, self._span_ctx = chunks, n_dec, ctx
        self.version += 1
        return self.span_end

    def _span_limit(self) -> int:
        """Decode steps until the next event: a call's own event, a promotion, or KV exhaustion."""
        step, dec = self.step, self.decoding
        limit = 1 << 40
        event = dec.next_event()
        if event is not None:
            limit = event - step
        promote = self.policy.next_event_step()
        if promote is not None:
            limit = min(limit, max(1, promote - step))
        return max(1, dec.steps_within(step, self.kv.available(), limit))

    # -- executing ------------------------------------------------------------------------------------

    def finish_span(self) -> list[SimCall]:
        """Apply the planned span (as truncated); return the calls that completed at its end."""
        k, s = self.span_steps, self.step
        end = s + k
        dec, policy = self.decoding, self.policy
        grow = dec.growth(s, k)
        if grow:
            self.kv.alloc(grow)
        self.step, self.now = end, self.span_end
        self.stats.steps += k
        self.stats.busy_s += self.span_end - self.span_start
        chunk_of = {id(sc): c for sc, c in self.span_chunks if c > 0} if self.span_chunks else {}
        if self.config.fast_forward:
            work = dec.pop_due(end)
            work.extend(sc for sc, c in self.span_chunks if c > 0)
            if self.gang and work:
                add_gang_siblings(work, end, chunk_of, self.sims, self.quanta,
                                  policy.config.prefill_weight)
        else:  # reference mode: every running call is charged on every step
            dec.pop_due(end)
            work = list(self.running)
        charge_event_step(policy, work, end, chunk_of)
        finished = []
        for sc in work:
            if sc.mode == DECODE:
                if sc.generated0 + end - sc.step0 == sc.output:
                    dec.remove(sc, end)
                    self._finish(sc)
                    finished.append(sc)
                    continue
            elif sc.prefill_left == 0:
                self._prefill_done(sc, end)
                if sc.generated == sc.output:
                    self._finish(sc)
                    finished.append(sc)
                    continue
                dec.add(sc, end)
                sc.charged_to = end
            elif self.levels is not None:  # still prefilling: its charge may have moved its level
                self.levels.refile(sc)
                continue
            else:
                continue
            if self.levels is not None:
                self.levels.refile(sc)
            self._push_event(sc)
        policy.tick(k)
        return finished
