"""Property tests: invariants of every policy under random arrivals, service, waits and completions."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.policy import POLICIES, PolicyConfig, SeatBudget, make_policy
from autellix.programs import CallState, ProcessTable

CFG = PolicyConfig(boundaries=(0, 4, 8, 16, 32, math.inf), beta=3, max_preemptions=1_000, preempt_gap=1)

ops = st.lists(
    st.tuples(st.sampled_from(["arrive", "schedule", "charge", "tick", "finish"]),
              st.integers(0, 7), st.integers(0, 12)),
    min_size=20, max_size=120)


def check_membership(policy, running, active):
    waiting = list(policy.waiting_order())
    assert len(waiting) == len(set(map(id, waiting))) == policy.num_waiting
    assert not set(map(id, waiting)) & set(map(id, running))
    assert set(map(id, waiting)) | set(map(id, running)) == set(map(id, active))
    assert all(c.state is CallState.WAITING for c in waiting)
    assert all(c.state is CallState.RUNNING for c in running)


def apply_op(policy, table, op, a, b, running, active) -> None:
    """The script steps both property tests share: charge a running call, tick, finish one."""
    if op == "charge" and running:
        policy.charge(running[a % len(running)], decode_tokens=b, prefill_tokens=a)
    elif op == "tick":
        policy.tick(b)
    elif op == "finish" and running:
        call = running.pop(a % len(running))
        policy.remove(call)
        table.finish_call(call)
        active.remove(call)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(POLICIES)), seats=st.integers(1, 4), script=ops)
def test_policy_invariants(name, seats, script):
    policy, table = make_policy(name, CFG), ProcessTable()
    running, active, seen_service = [], [], {}
    for op, a, b in script:
        if op == "arrive":
            call = table.new_call(f"p{a % 4}", thread=str(b % 2), prompt_tokens=b)
            call.remaining = float(a * 10 + b)
            policy.add(call)
            active.append(call)
        elif op == "schedule":
            before = sorted(active, key=policy.rank)
            policy.apply(policy.schedule(running, SeatBudget(seats, len(running))), running)
            # With unbounded preemption and a seat budget, the batch is exactly a priority prefix.
            assert set(map(id, running)) == set(map(id, before[:min(seats, len(before))]))
        else:
            apply_op(policy, table, op, a, b, running, active)
        check_membership(policy, running, active)
        for pid, prog in table.programs.items():
            assert prog.service >= seen_service.get(pid, 0)  # service never decreases
            seen_service[pid] = prog.service
        for call in active:
            assert 0 <= call.level < CFG.num_levels
            assert call.service >= 0 and call.wait >= 0


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(["plas", "atlas", "autellix"]), seats=st.integers(1, 4), script=ops,
       flips=st.lists(st.booleans(), min_size=120, max_size=120))
def test_adaptive_order_keeps_every_call_once_while_the_cache_binding_flips(name, seats, script, flips):
    """With `kv_bound` flipping at random, no call is lost or duplicated, and while it binds the waiting
    order is program FCFS and nothing is preempted for the order."""
    policy, table = make_policy(name, CFG), ProcessTable()
    now = iter(range(10_000))
    bound = iter(flips)
    state = [False]
    policy.bind_kv(lambda: state[0])
    running, active = [], []
    for op, a, b in script:
        state[0] = next(bound)
        if op == "arrive":
            call = table.new_call(f"p{a % 4}", thread=str(b % 2), prompt_tokens=b, now=float(next(now)))
            policy.add(call)
            active.append(call)
        elif op == "schedule":
            batch = policy.schedule(running, SeatBudget(seats, len(running)))
            assert not (state[0] and batch.preempted)
            policy.apply(batch, running)
        else:
            apply_op(policy, table, op, a, b, running, active)
        check_membership(policy, running, active)
        if state[0]:
            order = [(c.program.created, c.seq) for c in policy.waiting_order()]
            assert order == sorted(order)
