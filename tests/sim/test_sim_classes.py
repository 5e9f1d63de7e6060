"""A batch fleet beside an interactive stream in the simulator (docs/simulator.md, "Interactive and batch";
docs/policy.md, rule 9)."""

from __future__ import annotations

import pytest

from autellix.policy import PolicyConfig
from autellix.sim.cluster import Cluster
from autellix.sim.config import EngineConfig
from autellix.sim.cost import load_cost_model
from autellix.sim.engine import SimEngine
from autellix.workloads import generate

COST = load_cost_model("h200", "llama3.1-8b")
TIGHT = EngineConfig(max_num_seqs=16, max_batched_tokens=512, gpu_blocks=400, cpu_blocks=40)
"""A pool the batch fleet overflows several times over."""


def mix(policy: str, classes: bool = True, config: EngineConfig = TIGHT, n: int = 12):
    fleet = generate("coding", 80, 1.0, 0, scale=0.3)
    stream = [p.retimed(p.arrival, f"i-{p.program_id}") for p in generate("coding", n, 0.05, 1, scale=0.3)]
    cluster = Cluster(fleet, policy, COST, config=config, concurrency=10, interactive=stream)
    if not classes:  # the same run with the fleet unmarked: one class
        for run in cluster.runs:
            run.batch = False
    return cluster.run()


def interactive(res):
    programs = [p for p in res.programs if p.program.startswith("i-")]
    calls = [c for c in res.calls if c.program.startswith("i-")]
    return programs, calls


def test_every_interactive_program_completes_and_only_the_fleet_is_batch():
    res = mix("autellix")
    programs, _ = interactive(res)
    assert len(programs) == 12 and not any(p.batch for p in programs)
    fleet = [p for p in res.programs if not p.program.startswith("i-")]
    assert fleet and all(p.batch for p in fleet)
    start = min(p.arrival for p in programs)
    assert sum(p.finish <= start for p in fleet) >= 10  # the stream starts once the fleet turned over


def test_interactive_programs_keep_their_history_and_finish_sooner_under_batch_pressure():
    with_classes, calls_with = interactive(mix("autellix"))
    without, calls_without = interactive(mix("autellix", classes=False))
    hits = [sum(c.hit_tokens for c in calls) / sum(c.prompt_tokens for c in calls)
            for calls in (calls_with, calls_without)]
    assert hits[0] > hits[1]
    mean = [sum(p.jct for p in ps) / len(ps) for ps in (with_classes, without)]
    assert mean[0] < 0.8 * mean[1]


@pytest.mark.parametrize("policy", ["autellix", "continuum", "fcfs"])
def test_mixed_fast_forward_equals_step_by_step(policy):
    fast = mix(policy, n=6)
    slow = mix(policy, config=TIGHT.replace(fast_forward=False), n=6)
    key = [(c.program, c.index, c.preemptions, c.hit_tokens) for c in fast.calls]
    assert key == [(c.program, c.index, c.preemptions, c.hit_tokens) for c in slow.calls]
    for a, b in zip(fast.calls, slow.calls):
        assert a.finished == pytest.approx(b.finished, rel=1e-9, abs=1e-9)


def test_blocks_add_up_and_no_batch_call_outwaits_the_bound(monkeypatch):
    plan = SimEngine.plan
    worst = [0]

    def checked(engine: SimEngine, now: float):
        end = plan(engine, now)
        engine.kv.check(sum(engine.res.private(sc, engine.step) for sc in engine.running))
        policy = engine.policy
        for call in policy.waiting_order():
            if call.yields:
                worst[0] = max(worst[0], policy.current_wait(call))
        return end

    monkeypatch.setattr(SimEngine, "plan", checked)
    mix("autellix")
    assert 0 < worst[0] <= PolicyConfig().batch_wait_steps
