"""Load balancers: locality pinning, re-pinning, health, baselines."""

from __future__ import annotations

import pytest

from autellix.balance import EngineLoad, LeastUsed, Locality, NoHealthyEngine, RoundRobin, make_balancer
from autellix.programs import ProgramState


def engines(*active):
    return [EngineLoad(i, active=a) for i, a in enumerate(active)]


def test_short_calls_go_to_least_used_engine():
    lb, p = Locality(), ProgramState("p", 0)
    assert lb.pick(p, 2048, engines(3, 1, 2)) == 1
    assert p.engine is None  # short calls never pin


def test_long_calls_pin_at_first_long_call_and_stay():
    lb, p = Locality(), ProgramState("p", 0)
    pool = engines(3, 1, 2)
    assert lb.pick(p, 2049, pool) == 1 and p.engine == 1
    pool[1].active = 50
    assert lb.pick(p, 5000, pool) == 1  # KV cache lives there: stay despite load
    assert lb.pick(p, 100, pool) == 2  # short calls still balance


def test_dead_pinned_engine_is_repinned():
    lb, p = Locality(), ProgramState("p", 0)
    pool = engines(0, 5, 1)
    assert lb.pick(p, 4000, pool) == 0
    pool[0].healthy = False
    assert lb.pick(p, 4000, pool) == 2 and p.engine == 2


def test_unhealthy_engines_are_skipped_and_none_healthy_raises():
    pool = engines(0, 0, 0)
    pool[0].healthy = pool[2].healthy = False
    assert {RoundRobin().pick(ProgramState("p", 0), 1, pool) for _ in range(4)} == {1}
    assert LeastUsed().pick(ProgramState("p", 0), 1, pool) == 1
    for e in pool:
        e.healthy = False
    with pytest.raises(NoHealthyEngine):
        Locality().pick(ProgramState("p", 0), 1, pool)


def test_round_robin_cycles_and_factory_errors():
    rr, p = make_balancer("round_robin"), ProgramState("p", 0)
    assert [rr.pick(p, 1, engines(0, 0, 0)) for _ in range(4)] == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="round_robin"):
        make_balancer("random")


def test_sticky_keeps_a_program_on_one_engine_and_moves_only_a_dead_engines_programs():
    from autellix.balance import EngineLoad, make_balancer
    from autellix.programs import ProgramState

    engines = [EngineLoad(i) for i in range(4)]
    sticky = make_balancer("sticky")
    programs = [ProgramState(f"p{i}", 0.0) for i in range(200)]
    first = {p.program_id: sticky.pick(p, 10_000, engines) for p in programs}
    assert all(sticky.pick(p, 5, engines) == first[p.program_id] for p in programs)  # any length
    assert len(set(first.values())) == 4  # spread over every engine
    engines[2].healthy = False
    moved = {p.program_id: sticky.pick(p, 5, engines) for p in programs}
    assert all(moved[pid] == e for pid, e in first.items() if e != 2)
    assert all(moved[pid] != 2 for pid in first)
    assert make_balancer("sticky").pick(programs[0], 5, engines) == moved["p0"]  # no state: same answer
