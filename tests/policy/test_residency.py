"""Policy core: KV residency decisions (holds, release order, admission, pausing) and ThunderAgent's gate."""

from __future__ import annotations

import math

import pytest

from autellix.policy import ConfigError, PolicyConfig, make_policy
from autellix.policy.pause_gate import PauseGate
from autellix.policy.residency import ResidencyPolicy

CONFIG = PolicyConfig(hold_prior_s=1.0, hold_slack=2.0, hold_max_s=10.0, hold_cap=0.5, admit_high=0.9,
                      admit_low=0.8)


def test_hold_lasts_slack_times_the_programs_own_mean_pause():
    r = ResidencyPolicy(CONFIG, 1000)
    first = r.finished("p", "k1", 10, 1280, now=0.0)
    assert first.deadline == 2.0 and first.expected == 1.0  # no pause seen yet: the prior
    r.take("k1")
    r.arrive("p", 3.0)  # a 3 s pause
    hold = r.finished("p", "k2", 12, 1536, now=5.0)
    assert hold.expected == 8.0 and hold.deadline == 11.0
    r.arrive("q", 0.0)  # q has never finished a call: no pause recorded for it
    assert r.expected_pause("q") == 3.0  # unseen programs use the mean over all programs


def test_no_hold_for_a_program_expected_back_later_than_hold_max():
    r = ResidencyPolicy(CONFIG, 1000)
    r.finished("chat", "a", 5, 600, now=0.0)
    r.take("a")
    r.arrive("chat", 30.0)  # a user thinking for 30 s
    assert r.finished("chat", "b", 6, 700, now=40.0) is None
    assert r.counters.holds_granted == 1


def test_release_order_is_lowest_value_first_and_spares_the_asking_program():
    r = ResidencyPolicy(CONFIG, 1000)
    for pid, pause in (("soon", 0.5), ("late", 6.0)):
        r.finished(pid, pid + "0", 4, 512, now=0.0)
        r.take(pid + "0")
        r.arrive(pid, pause)
    soon = r.finished("soon", "s", 10, 1280, now=10.0)
    late = r.finished("late", "l", 10, 1280, now=10.0)
    assert soon.value(10.0) > late.value(10.0)
    assert r.by_value(10.0) == [late, soon]  # the program expected back last goes first
    assert r.by_value(10.0, keep={"late"}) == [soon]
    # once overdue, a hold's value falls with the time its program has been away
    assert soon.value(11.0) > soon.value(13.0)


def test_expired_holds_are_released_and_deadlines_are_in_order():
    r = ResidencyPolicy(CONFIG, 1000)
    a = r.finished("a", "ka", 3, 300, now=0.0)  # deadline 2
    b = r.finished("b", "kb", 3, 300, now=1.0)  # deadline 3
    assert r.next_deadline() == 2.0
    assert r.expired(2.5) == [a] and not a.live and b.live
    assert r.next_deadline() == 3.0 and sum(h.blocks for h in r.holds.values()) == 3
    assert r.end("b") == [b] and r.next_deadline() is None and not r.holds
    assert r.counters.holds_expired == 1


def test_cap_releases_lowest_value_holds_until_the_held_share_fits():
    r = ResidencyPolicy(CONFIG, 100)  # cap: 50 blocks
    holds = [r.finished(f"p{i}", i, 20, 2560, now=float(i)) for i in range(3)]
    released = r.over_cap(60, now=3.0)
    assert len(released) == 1 and released[0] is holds[0]  # overdue longest: lowest value
    assert r.over_cap(40, now=3.0) == []
    assert r.counters.holds_released_cap == 1


def test_hard_holds_never_give_way_and_follow_the_ttl_quantile():
    r = ResidencyPolicy(CONFIG, 100, soft=False, admission=False, ttl_quantile=0.9)
    for k, pause in enumerate([0.1 * i for i in range(1, 11)]):
        r.finished("p", k, 1, 100, now=10.0 * k)
        r.take(k)
        r.arrive("p", 10.0 * k + pause)
    hold = r.finished("p", "last", 90, 9000, now=200.0)
    assert hold.deadline == pytest.approx(201.0)  # 90th percentile of 0.1..1.0 s
    assert r.by_value(200.0) == [] and r.over_cap(90, 200.0) == []
    assert r.gate is None  # Continuum admits every program


def fail_holds(r: ResidencyPolicy, pid: str = "t", n: int = 60) -> None:
    """n calls of a program worth a hold come back to find none of their history cached."""
    for i in range(n):
        r.finished(pid, f"{pid}{i}", 1, 100, now=float(i))
        r.take(f"{pid}{i}")
        r.gate.observe(pid, 100, 0)


def test_the_gate_comes_into_force_only_while_holds_fail_and_has_hysteresis():
    r = ResidencyPolicy(CONFIG, 100)  # high 90, low 80
    gate = r.gate
    assert gate.admit("a", 50) and gate.admit("b", 30)
    assert gate.admit("c", 20)  # 100 > 90, but holds work: no gate (chat-like programs need none)
    gate.observe("c", 100, 0)  # c's call missed its history, but c was never worth a hold: no signal
    assert gate.missed == 0
    fail_holds(r, "b")
    assert gate.missed > 0.9 and not gate.admit("d", 5)  # working sets past 90 and holds failing
    assert gate.admitted("a") and not gate.admitted("d")
    gate.end("c")  # 80: not below the low-water mark yet
    assert not gate.admit("d", 5)
    gate.grow("b", 25)  # 75: below 80, the gate opens
    assert gate.admit("d", 10) and gate.total == 85
    r.end("a")
    assert gate.total == 35 and not gate.admitted("a")


def test_an_idle_engine_lets_the_first_waiting_program_in():
    r = ResidencyPolicy(CONFIG, 100)
    assert r.gate.admit("a", 95)
    fail_holds(r, "a")
    assert not r.gate.admit("b", 10) and r.gate.admit("b", 10, idle=True)


def test_past_high_water_programs_at_a_tool_boundary_are_paused_smallest_first():
    r = ResidencyPolicy(CONFIG, 100)
    gate = r.gate
    for pid in ("busy", "x", "y"):
        assert gate.admit(pid, 25)
    fail_holds(r, "busy")
    gate.started("busy")  # a call in flight: never paused
    r.finished("y", "ky", 25, 3200, now=100.0)  # y back soon: a valuable hold, but no say in the order
    gate.grow("busy", 40)
    assert r.pause() == []  # 40 + 25 + 25 = 90: fits
    gate.grow("y", 35)  # 100 > 90: x is the smallest at a tool boundary (25 < 35), so x goes
    assert r.pause() == [] and not gate.admitted("x") and gate.admitted("y")
    assert gate.total == 75 and r.counters.programs_paused == 1
    gate.grow("busy", 70)  # 105 > 90: y is the only one at a tool boundary; its hold goes with it
    assert [h.key for h in r.pause()] == ["ky"] and not gate.admitted("y")
    assert r.pause() == [] and gate.admitted("busy")  # 70: fits


def test_residency_settings_are_validated_and_parsed():
    assert PolicyConfig.from_dict({"residency": "off", "hold_cap": "0.25"}).residency is False
    for bad in ({"hold_cap": 1.5}, {"admit_low": 0.95, "admit_high": 0.9}, {"hold_slack": -1}):
        with pytest.raises(ConfigError):
            PolicyConfig.from_dict(bad)


def test_program_fcfs_orders_by_program_arrival():
    policy = make_policy("pfcfs")
    table = PolicyConfig().new_table()
    old = table.new_call("old", "0", now=0.0)
    table.finish_call(old, 1.0)
    new = table.new_call("new", "0", now=2.0)
    second = table.new_call("old", "1", now=3.0)  # the old program's next turn
    for call in (new, second):
        policy.add(call)
    assert list(policy.waiting_order()) == [second, new]


def test_thunderagent_pauses_acting_programs_shortest_first_and_resumes_smallest_first():
    gate = PauseGate(capacity_tokens=1000, threshold=0.9)  # limit 900
    for pid, tokens in (("a", 300), ("b", 200), ("c", 100)):
        gate.arrive(pid, tokens)
    assert gate.rebalance() == ["c", "b", "a"] and gate.usage == 600
    for pid, tokens in (("a", 300), ("b", 200), ("c", 100)):
        gate.started(pid, tokens)
    gate.finished("b", 250)  # b acting (in a tool call), a and c running
    gate.finished("c", 150)
    gate.started("c", 150)  # c runs again; only b is acting
    gate.finished("a", 700)  # a acting now; usage 700 + 250 + 150 = 1100 > 900
    assert gate.rebalance() == [] and not gate.active("b") and gate.active("a") and gate.active("c")
    assert gate.usage == 850 and gate.pauses == 1
    gate.arrive("d", 40)
    assert gate.rebalance() == ["d"]  # b (250) does not fit beside 890; d does
    gate.end("a")
    assert gate.rebalance() == ["b"]


def test_thunderagent_capacity_learned_late_applies_at_the_next_rebalance():
    gate = PauseGate(capacity_tokens=math.inf, threshold=0.9)  # unknown: everyone in
    for pid in ("a", "b"):
        gate.arrive(pid, 500)
    assert gate.rebalance() == ["a", "b"] and gate.usage == 1000
    gate.set_capacity(1000)  # limit 900: an acting program is paused (ties: by id)
    assert gate.rebalance() == [] and not gate.active("a") and gate.usage == 500
    with pytest.raises(ValueError):
        gate.set_capacity(0)


def test_thunderagent_lets_one_program_in_when_none_is_active():
    gate = PauseGate(capacity_tokens=100, threshold=0.9)
    gate.arrive("huge", 500)
    assert gate.rebalance() == ["huge"]
