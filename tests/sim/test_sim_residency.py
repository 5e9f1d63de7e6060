"""Simulator: KV residency as the engines carry it out (holds, caps, release, admission, closed loops)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.metrics import closed_loop
from autellix.policy import PolicyConfig
from autellix.sim.cluster import Cluster, simulate
from autellix.sim.config import EngineConfig
from autellix.sim.cost import load_cost_model
from autellix.sim.engine import SimEngine
from autellix.sim.holding import EngineHolding
from autellix.sim.points import Point, run_point
from autellix.sim.spec import SweepSpec, cost_model
from autellix.workloads import CallSpec, ProgramSpec, generate

COST = load_cost_model("h200", "llama3.1-8b")
TIGHT = EngineConfig(max_num_seqs=16, max_batched_tokens=512, gpu_blocks=400, cpu_blocks=40)
"""A pool a few coding programs overflow, so holds, pressure, gating and pausing all happen."""


def coding(n: int, scale: float = 0.3, seed: int = 0):
    return generate("coding", n, 1.0, seed, scale=scale)


class Watch:
    """Checks invariants after every plan and step of every engine (monkeypatched in)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, check) -> None:
        plan, finish, preempt = SimEngine.plan, SimEngine.finish_span, SimEngine._preempt
        self.pressure_preemptions_with_holds = 0

        def checked_plan(engine: SimEngine, now: float):
            end = plan(engine, now)
            check(engine, True)
            return end

        def checked_finish(engine: SimEngine):
            done = finish(engine)
            check(engine, False)
            return done

        def watched_preempt(engine: SimEngine, sc):
            short = engine.decoding.n and engine.decoding.growth(engine.step, 1) > engine.kv.available()
            if short and engine.holding is not None and engine.holding.policy.by_value(engine.now):
                self.pressure_preemptions_with_holds += 1
            return preempt(engine, sc)

        monkeypatch.setattr(SimEngine, "plan", checked_plan)
        monkeypatch.setattr(SimEngine, "finish_span", checked_finish)
        monkeypatch.setattr(SimEngine, "_preempt", watched_preempt)


def _blocks_add_up(engine: SimEngine, planned: bool = True) -> None:
    engine.kv.check(sum(engine.res.private(sc, engine.step) for sc in engine.running))


def test_holds_stay_under_the_cap_end_with_programs_and_deadlines(monkeypatch):
    pc = PolicyConfig(hold_cap=0.2)
    ended: set[str] = set()

    def check(engine: SimEngine, planned: bool) -> None:
        _blocks_add_up(engine)
        kv, policy = engine.kv, engine.holding.policy
        assert kv.held <= pc.hold_cap * kv.gpu_blocks
        for hold in policy.holds.values():  # a deadline passed inside a step is acted on at its end
            assert hold.program_id not in ended and (hold.deadline > engine.now or not planned)
        assert set(engine.holding.chains) == set(policy.holds)

    watch = Watch(monkeypatch, check)
    end_program = SimEngine.end_program

    def note_end(engine: SimEngine, program_id: str, calls) -> None:
        ended.add(program_id)
        end_program(engine, program_id, calls)

    monkeypatch.setattr(SimEngine, "end_program", note_end)
    cluster = Cluster(coding(24), "autellix", COST, config=TIGHT, policy_config=pc)
    res = cluster.run()
    t = res.totals()
    assert t.holds_granted > 0 and t.holds_released_cap > 0 and t.holds_expired > 0
    assert t.programs_gated > 0 and t.programs_paused > 0
    assert watch.pressure_preemptions_with_holds == 0
    kv = cluster.engines[0].kv
    assert kv.held == 0 and not kv.holds and not kv.refs and kv.free + kv.evictable == kv.gpu_blocks


def test_a_waiting_call_is_never_refused_while_another_programs_hold_could_give_way(monkeypatch):
    refused_with_holds = []

    def check(engine: SimEngine, planned: bool) -> None:
        if not planned:
            return
        policy = engine.policy
        first = next(iter(policy.waiting_order()), None)
        if first is None or len(engine.running) >= engine.config.max_num_seqs:
            return
        sc = engine.sims[first]
        dec = engine.decoding
        blocks = engine.kv.available() - engine.watermark - dec.growth(engine.step, 1)
        tokens = engine.config.max_batched_tokens - dec.n - sum(s.prefill_left for s in engine.prefilling)
        if tokens > 0 and engine.res.admission_cost(sc) > blocks:
            others = engine.holding.policy.by_value(engine.now, {first.program_id})
            if others:
                refused_with_holds.append((engine.now, first, len(others)))

    watch = Watch(monkeypatch, check)
    res = simulate(coding(24), "autellix", COST, config=TIGHT.replace(max_num_seqs=64))
    assert res.totals().holds_released_pressure > 0  # holds did give way for waiting calls
    assert refused_with_holds == [] and watch.pressure_preemptions_with_holds == 0


def test_a_held_history_survives_fillers_that_evict_it_under_lru():
    """A program pauses 1.5 s between two calls while six one-call programs pass through a pool that holds
    its history and two fillers' at once: under plain LRU the fillers evict its history, with a hold its
    next call finds all of it cached (and the ended fillers' blocks are evicted first)."""
    agent = ProgramSpec("agent", "coding", 0.0, (CallSpec(800, 16), CallSpec(916, 16, 0, (0,), 1.5, 0)))
    fillers = [ProgramSpec(f"filler-{k}", "chat", 0.5 + 0.2 * k, (CallSpec(400, 10),)) for k in range(6)]
    cfg = EngineConfig(max_num_seqs=4, max_batched_tokens=2048, gpu_blocks=100, cpu_blocks=0)
    pc = PolicyConfig(admit_high=10.0, admit_low=10.0, hold_cap=1.0)  # no gate, no cap: holds alone
    hit = {}
    for policy in ("autellix", "autellix-lru"):
        res = simulate([agent, *fillers], policy, COST, config=cfg, policy_config=pc)
        hit[policy] = next(c.hit_tokens for c in res.calls if c.program == "agent" and c.index == 1)
    assert hit["autellix"] == 816 // 16 * 16  # the whole history, in full blocks
    assert hit["autellix-lru"] < 400


def test_residency_stops_the_thrash_of_an_overfull_fleet():
    """Eight coding agents on a pool that holds under three histories: FCFS recomputes nearly every
    prompt; residency serves most from the cache and completes at least as many programs."""
    programs = coding(70, scale=1.0)
    cfg = TIGHT.replace(gpu_blocks=2000)
    base, ours = (closed_loop(*_fleet(programs, p, cfg)) for p in ("fcfs", "autellix"))
    assert base["prefix_hit_share"] < 0.05 and ours["prefix_hit_share"] > 0.4
    assert ours["prefill_tokens"] < 0.7 * base["prefill_tokens"]
    assert ours["programs_per_hour"] >= base["programs_per_hour"]
    assert ours["new_prompt_tokens"] <= ours["prefill_tokens"]


def _fleet(programs, policy: str, cfg: EngineConfig):
    res = simulate(programs, policy, COST, config=cfg, concurrency=8, stop_after=50)
    return res.programs, res.calls


@pytest.mark.parametrize("policy", ["autellix", "continuum", "thunderagent"])
def test_closed_loop_fast_forward_equals_step_by_step(policy):
    programs = coding(30)
    fast = simulate(programs, policy, COST, config=TIGHT, concurrency=8, stop_after=20)
    slow = simulate(programs, policy, COST, config=TIGHT.replace(fast_forward=False), concurrency=8,
                    stop_after=20)
    key = [(c.program, c.index, c.preemptions, c.hit_tokens) for c in fast.calls]
    assert key == [(c.program, c.index, c.preemptions, c.hit_tokens) for c in slow.calls]
    for a, b in zip(fast.calls, slow.calls):
        assert a.finished == pytest.approx(b.finished, rel=1e-9, abs=1e-9)
    assert len(fast.programs) == 20 and fast.events < slow.events


def test_closed_loop_keeps_the_fleet_size_and_stops_at_the_count():
    res = simulate(coding(30), "fcfs", COST, config=TIGHT, concurrency=5, stop_after=12)
    assert len(res.programs) == 12
    starts = sorted(p.arrival for p in res.programs)
    assert starts[:5] == [0.0] * 5  # the first five start at once, the rest as others end
    finishes = sorted(p.finish for p in res.programs)
    assert all(s in finishes for s in starts[5:])


def test_closed_loop_points_are_reproducible_from_the_seed():
    spec = SweepSpec("coding", ("autellix",), (), programs=20, scale=0.3, config=TIGHT)
    cost, cpu = cost_model(spec)
    a = run_point(spec, Point("autellix", concurrency=6), cost, cpu)
    b = run_point(spec, Point("autellix", concurrency=6), cost, cpu)
    c = run_point(dataclasses.replace(spec, seed=1), Point("autellix", concurrency=6), cost, cpu)
    drop = ("wall_s",)
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert a["programs_per_hour"] != c["programs_per_hour"]


@settings(max_examples=25, deadline=None)
@given(workload=st.sampled_from(["coding", "react", "tree", "chat"]), seed=st.integers(0, 1000),
       policy=st.sampled_from(["autellix", "continuum"]), blocks=st.integers(120, 600),
       cap=st.sampled_from([0.1, 0.5, 1.0]), high=st.sampled_from([0.5, 0.9, 1.5]),
       engines=st.integers(1, 2), closed=st.booleans())
def test_no_block_is_leaked_or_double_counted(workload, seed, policy, blocks, cap, high, engines, closed):
    programs = generate(workload, 8, 2.0, seed, scale=0.2 if workload != "tree" else 0.05)
    pc = PolicyConfig(hold_cap=cap, admit_high=high, admit_low=high * 0.9)
    cfg = EngineConfig(max_num_seqs=8, max_batched_tokens=256, gpu_blocks=blocks, cpu_blocks=20)
    block = COST.block_tokens
    need = max(-(-(c.prompt_tokens + c.output_tokens) // block) for p in programs for c in p.calls)
    if need > blocks * (1 - cfg.watermark):
        return  # a call larger than the pool is a configuration error, tested elsewhere
    cluster = Cluster(programs, policy, COST, engines, config=cfg, policy_config=pc,
                      concurrency=3 if closed else None, stop_after=6 if closed else None)
    with pytest.MonkeyPatch.context() as mp:  # every plan and step: the block states add up
        Watch(mp, _blocks_add_up)
        cluster.run()
    if not closed:
        for engine in cluster.engines:
            kv = engine.kv
            assert not kv.refs and not kv.holds and kv.held == 0
            assert kv.free + kv.evictable == kv.gpu_blocks


@settings(max_examples=20, deadline=None)
@given(workload=st.sampled_from(["coding", "agent-long", "react"]), seed=st.integers(0, 1000),
       blocks=st.integers(150, 500), high=st.sampled_from([0.5, 0.9]), engines=st.integers(1, 2))
def test_the_gate_admits_first_come_first_served_and_every_program_completes(workload, seed, blocks, high,
                                                                             engines):
    """The gate's wait bound (policy/admission.py): a program waits at an engine's gate only behind the
    programs that came to it earlier, and an idle engine always admits, so every program completes."""
    scale = 0.02 if workload == "agent-long" else 0.2
    programs = generate(workload, 8, 2.0, seed, scale=scale)
    block = COST.block_tokens
    need = max(-(-(c.prompt_tokens + c.output_tokens) // block) for p in programs for c in p.calls)
    if need > blocks * 0.99:
        return  # a call larger than the pool is a configuration error, tested elsewhere
    pc = PolicyConfig(admit_high=high, admit_low=high * 0.6)
    cfg = EngineConfig(max_num_seqs=8, max_batched_tokens=256, gpu_blocks=blocks, cpu_blocks=20)
    cluster = Cluster(programs, "autellix", COST, engines, config=cfg, policy_config=pc)
    admitted: list[tuple[list[str], list[str]]] = []  # (waiting before, let in) at every admission
    original = EngineHolding.admit_gated

    def admit_gated(self: EngineHolding, idle: bool) -> list:
        waiting = list(self.gated)
        out = original(self, idle)
        admitted.append((waiting, list(dict.fromkeys(sc.call.program_id for sc in out))))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EngineHolding, "admit_gated", admit_gated)
        result = cluster.run()
    assert len(result.programs) == len(programs)  # every program completed
    for waiting, let_in in admitted:
        assert let_in == waiting[:len(let_in)]  # nobody overtakes a program gated before it
