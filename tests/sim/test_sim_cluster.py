"""Cluster: several engines behind the balancers, program drivers, the gateway's shared table."""

from __future__ import annotations

import dataclasses

import pytest

from autellix.sim.cluster import Cluster, simulate
from autellix.sim.config import EngineConfig
from autellix.sim.cost import load_cost_model
from autellix.sim.toy import run_scenario
from autellix.workloads import CallSpec, ProgramSpec, generate

COST = load_cost_model("h200", "llama3.1-8b")
SMALL = EngineConfig(max_num_seqs=32, max_batched_tokens=1024, gpu_blocks=4000)


@pytest.mark.parametrize("balancer", ["round_robin", "least_used", "locality"])
def test_balancers_spread_calls_and_everything_finishes(balancer):
    programs = generate("mixed", 12, 4.0, 0, scale=0.3)
    res = simulate(programs, "autellix", COST, 3, balancer, config=SMALL)
    used = {c.engine for c in res.calls}
    assert used == {0, 1, 2}
    assert all(p.finish > p.arrival for p in res.programs)


def test_gang_policies_work_across_engines():
    """Parallel calls of one tree-search program land on different engines; ATLAS gang leveling stays
    inside each engine's own table (the gateway only passes snapshots), so nothing is dequeued from
    the wrong engine's queues."""
    programs = generate("tree", 2, 2.0, 0, scale=0.3)
    res = simulate(programs, "atlas", COST, 2, "round_robin", config=SMALL)
    by_program: dict[str, set[int]] = {}
    for c in res.calls:
        by_program.setdefault(c.program, set()).add(c.engine)
    assert all(engines == {0, 1} for engines in by_program.values())


def test_locality_pins_long_calls_to_one_engine():
    long = [CallSpec(3000, 10, depends_on=(i - 1,) if i else (), prefix_call=None) for i in range(4)]
    programs = [ProgramSpec(f"p{j}", "test", 0.1 * j, tuple(long)) for j in range(4)]
    res = simulate(programs, "autellix", COST, 4, "locality", config=SMALL)
    for j in range(4):
        assert len({c.engine for c in res.calls if c.program == f"p{j}"}) == 1


def test_dependencies_tool_pauses_and_threads():
    calls = (CallSpec(50, 5), CallSpec(60, 5, thread=1),
             CallSpec(200, 5, depends_on=(0, 1), tool_pause=0.5, prefix_call=0))
    res = simulate([ProgramSpec("p", "test", 1.0, calls)], "autellix", COST, config=SMALL)
    a, b, c = res.calls
    assert a.issued == b.issued == 1.0  # both roots at arrival, in parallel
    assert c.issued == pytest.approx(max(a.finished, b.finished) + 0.5)
    assert c.hit_tokens == 48  # the prefix call's 55 tokens: 3 full blocks served by the cache
    assert res.programs[0].finish == c.finished


def test_gateway_table_accumulates_program_service():
    calls = tuple(CallSpec(20 + 40 * i, 40, depends_on=(i - 1,) if i else (),
                           prefix_call=i - 1 if i else None) for i in range(3))
    cluster = Cluster([ProgramSpec("p", "test", 0.0, calls)], "plas", COST, config=SMALL)
    cluster.run()
    sims = cluster.runs[0].sims
    # PLAS: each call starts from the service of the calls before it (sequential program)
    assert sims[1].gcall.start_service == pytest.approx(sims[0].call.service)
    assert sims[2].gcall.start_service == pytest.approx(sims[0].call.service + sims[1].call.service)
    assert sims[0].call.service == pytest.approx(40 + 0.25 * 20)


def test_engine_scaling_lowers_latency_at_fixed_load():
    programs = generate("chat", 60, 12.0, 0, scale=0.3)
    one = simulate(programs, "autellix", COST, 1, config=dataclasses.replace(SMALL, max_num_seqs=8))
    four = simulate(programs, "autellix", COST, 4, config=dataclasses.replace(SMALL, max_num_seqs=8))
    assert four.summary().mean_latency < 0.7 * one.summary().mean_latency


def test_toy_scenarios_still_hold():
    fig2 = {p: r.total_wait for p, r in run_scenario("paper-fig2").items()}
    assert fig2 == {"fcfs": 18, "mlfq": 15, "plas": 12, "srpt": 7}
    atlas = {p: r.total_wait for p, r in run_scenario("paper-atlas").items()}
    assert atlas == {"fcfs": 13, "mlfq": 13, "atlas": 12, "srpt": 7}


def test_bad_cluster_arguments():
    programs = generate("chat", 2, 1.0, 0)
    with pytest.raises(ValueError, match="engines"):
        simulate(programs, "fcfs", COST, 0)
    with pytest.raises(ValueError, match="balancer"):
        simulate(programs, "fcfs", COST, 2, "random")
    with pytest.raises(ValueError, match="programs"):
        simulate([], "fcfs", COST)
