"""Interactive and batch programs in the policy core (docs/policy.md, rule 9).

Each test breaks if the rule it names is wrong."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.policy import FCFS, PolicyConfig, SeatBudget, make_policy
from autellix.policy.residency import ResidencyPolicy
from autellix.programs import ProcessTable

CFG = PolicyConfig(boundaries=(0, 10, 20, 40, math.inf), beta=4, preempt_gap=1, batch_wait_steps=50)


def arrive(table: ProcessTable, policy, program: str, batch: bool | None = None):
    call = table.new_call(program, batch=batch)
    policy.add(call)
    return call


def test_every_interactive_call_goes_before_every_batch_call_whatever_the_levels():
    table = ProcessTable()
    table.start("old").service = 100.0  # an interactive program deep in the levels
    p = make_policy("autellix", CFG)
    fresh_batch = arrive(table, p, "b", batch=True)
    old = arrive(table, p, "old")
    assert (fresh_batch.level, old.level) == (0, 3)
    assert list(p.waiting_order()) == [old, fresh_batch]
    assert p.priority(old) < p.priority(fresh_batch)


def test_a_call_that_names_no_class_keeps_its_programs():
    table = ProcessTable()
    table.new_call("b", batch=True)
    assert table.new_call("b").program.batch
    assert not table.new_call("b", batch=False).program.batch


@pytest.mark.parametrize("name, preempts", [("autellix", True), ("fcfs", False), ("pfcfs", False)])
def test_only_program_aware_policies_preempt_batch_calls_for_interactive_ones(name, preempts):
    """vLLM's priority scheduler (the baselines given the class) never preempts for a waiting call."""
    table, p = ProcessTable(), make_policy(name, CFG)
    running = [arrive(table, p, f"b{i}", batch=True) for i in range(2)]
    p.apply(p.schedule([], SeatBudget(2)), [])
    waiter = arrive(table, p, "i")
    batch = p.schedule(running, SeatBudget(2, used=2))
    assert (batch.admitted, batch.preempted) == (([waiter], [running[-1]]) if preempts else ([], []))


def test_an_interactive_call_never_preempts_for_a_batch_one():
    table, p = ProcessTable(), make_policy("autellix", CFG)
    table.start("deep").service = 100.0
    running = arrive(table, p, "deep")
    p.apply(p.schedule([], SeatBudget(1)), [])
    arrive(table, p, "b", batch=True)  # level 0 against level 3, but batch
    assert p.schedule([running], SeatBudget(1, used=1)).preempted == []


def test_a_batch_call_stops_yielding_after_batch_wait_steps_in_all():
    """The batch starvation bound: with interactive calls always ahead, a batch call that has waited
    `batch_wait_steps` (across its waits) is ordered as an interactive call of its level."""
    table, p = ProcessTable(), make_policy("autellix", CFG)
    b = arrive(table, p, "b", batch=True)
    i = arrive(table, p, "i")
    p.tick(30)
    p.on_run(b)
    p.on_preempt(b)  # waited 30; 20 more to go
    p.tick(19)
    assert b.yields and list(p.waiting_order()) == [i, b]
    assert p.next_event_step() == 50
    p.tick(1)
    assert not b.yields and p.lifts == 1
    assert list(p.waiting_order()) == [b, i]  # same level, b arrived first


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=1, max_size=30),
       st.integers(1, 3), st.integers(0, 80))
def test_no_batch_call_waits_behind_interactive_ones_past_the_bound(arrivals, seats, bound):
    """A steady interactive stream on a busy engine: every waiting batch call that has waited
    `batch_wait_steps` competes as an interactive call from the next tick on."""
    cfg = CFG.replace(batch_wait_steps=bound)
    table, p = ProcessTable(), make_policy("autellix", cfg)
    running: list = []
    for n, (is_batch, steps) in enumerate(arrivals):
        arrive(table, p, f"p{n}", batch=is_batch)
        p.tick(steps)
        p.apply(p.schedule(running, SeatBudget(seats, used=len(running))), running)
        if running and steps:
            done = running.pop(0)
            p.remove(done)
            table.finish_call(done)
        for call in p.waiting_order():
            assert not (call.yields and p.current_wait(call) > bound)


def test_classes_order_the_engines_queue_while_the_cache_binds():
    table, p = ProcessTable(), make_policy("autellix", CFG)
    binds = [False]
    p.bind_kv(lambda: binds[0])
    early_batch = arrive(table, p, "b", batch=True)
    late = arrive(table, p, "i")
    binds[0] = True
    assert list(p.waiting_order()) == [late, early_batch]
    assert p.engine_key(late)[0] < p.engine_key(early_batch)[0]


def test_fcfs_given_the_class_is_vllms_priority_order():
    table, p = ProcessTable(), FCFS(CFG)
    b = arrive(table, p, "b", batch=True)
    i = arrive(table, p, "i")
    assert list(p.waiting_order()) == [i, b] and p.rank(i) < p.rank(b)


def test_batch_holds_give_way_before_any_interactive_hold():
    r = ResidencyPolicy(PolicyConfig(), 100)
    r.finished("i", "ki", 10, 100, now=0.0)  # expected back in hold_prior_s: the most valuable
    r.finished("b", "kb", 10, 10_000, now=0.0, batch=True)
    assert [h.key for h in r.by_value(0.5)] == ["kb", "ki"]
    assert [h.key for h in r.over_cap(70, 0.5)] == ["kb", "ki"]  # cap 50: both must go, batch first


def fail_holds(r: ResidencyPolicy, pid: str) -> None:
    for i in range(60):
        r.finished(pid, f"{pid}{i}", 1, 100, now=float(i))
        r.take(f"{pid}{i}")
        r.gate.observe(pid, 100, 0)


def test_while_batch_programs_are_resident_interactive_ones_pass_the_gate_and_are_never_paused():
    r = ResidencyPolicy(PolicyConfig(admit_high=0.9, admit_low=0.8), 100)
    gate = r.gate
    assert gate.admit("b1", 50, batch=True) and gate.admit("b2", 40, batch=True)
    fail_holds(r, "b1")
    assert not gate.admit("b3", 5, batch=True)  # in force: a batch program waits
    assert gate.admit("i", 30)  # an interactive one does not
    gate.started("b2")  # a call in flight: never paused
    r.finished("b1", "kb1", 50, 5000, now=100.0)
    assert [h.key for h in r.pause()] == ["kb1"]  # 120 > 90: b1 (50) goes, not i (30, the smallest)
    assert gate.admitted("i") and not gate.admitted("b1") and gate.total == 70
    gate.end("b2")
    gate.grow("i", 95)  # no batch program resident: the gate treats i as before
    assert not gate.admit("j", 5)
    r.pause()
    assert not gate.admitted("i")
