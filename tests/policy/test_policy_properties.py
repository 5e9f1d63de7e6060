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
        elif op == "charge" and running:
            call = running[a % len(running)]
            policy.charge(call, decode_tokens=b, prefill_tokens=a)
        elif op == "tick":
            policy.tick(b)
        elif op == "finish" and running:
            call = running.pop(a % len(running))
            policy.remove(call)
            table.finish_call(call)
            active.remove(call)
        check_membership(policy, running, active)
        for pid, prog in table.programs.items():
            assert prog.service >= seen_service.get(pid, 0)  # service never decreases
            seen_service[pid] = prog.service
        for call in active:
            assert 0 <= call.level < CFG.num_levels
            assert call.service >= 0 and call.wait >= 0
