"""Level semantics of the policy core (docs/policy.md, 'Rules').

Each test breaks if the rule it names is wrong."""

from __future__ import annotations

import math

import pytest

from autellix.policy import ATLAS, FCFS, MLFQ, PLAS, SRPT, PolicyConfig, SeatBudget, make_policy
from autellix.policy.config import ConfigError
from autellix.programs import CallState, ProcessTable

CFG = PolicyConfig(boundaries=(0, 10, 20, 40, math.inf), beta=4, preempt_gap=1)  # any better level preempts


def arrive(table: ProcessTable, policy, program: str, thread: str = "0", **kw):
    call = table.new_call(program, thread=thread, **kw)
    policy.add(call)
    return call


def run(policy, call):
    policy.on_run(call)
    return call


def test_entry_level_follows_program_service_not_level_zero():
    table = ProcessTable()
    table.start("old").service = 25.0
    plas, mlfq = PLAS(CFG), MLFQ(CFG)
    assert arrive(table, plas, "old").level == 2  # 25 in [20, 40)
    assert arrive(table, mlfq, "old").level == 0  # MLFQ: every new call enters the top level
    assert arrive(table, plas, "new").level == 0


def test_level_boundaries_are_half_open():
    p = PLAS(CFG)
    assert [p.level_of(s) for s in (0, 9.99, 10, 19, 20, 40, 1e12)] == [0, 0, 1, 1, 2, 3, 3]


def test_demotion_when_quantum_runs_out_with_carry():
    table, p = ProcessTable(), PLAS(CFG)
    c = run(p, arrive(table, p, "a"))
    p.charge(c, decode_tokens=9)
    assert c.level == 0
    p.charge(c, decode_tokens=1)  # quantum of level 0 is its width, 10
    assert (c.level, c.level_service) == (1, 0)
    p.charge(c, decode_tokens=25)  # 10 more leaves level 1, 15 left in level 2 (width 20)
    assert (c.level, c.level_service) == (2, 15)


def test_explicit_quanta_override_width():
    cfg = CFG.replace(quanta=(2, 2, 2, 2))
    table, p = ProcessTable(), PLAS(cfg)
    c = run(p, arrive(table, p, "a"))
    p.charge(c, decode_tokens=5)
    assert c.level == 2


def test_prefill_weight_charges_computed_prompt_tokens():
    table, p = ProcessTable(), PLAS(CFG.replace(prefill_weight=0.5))
    c = run(p, arrive(table, p, "a"))
    p.charge(c, decode_tokens=1, prefill_tokens=8)
    assert c.service == 5.0


def test_fcfs_inside_a_level_by_arrival():
    table, p = ProcessTable(), PLAS(CFG)
    calls = [arrive(table, p, name) for name in "xyz"]
    assert list(p.waiting_order()) == calls
    batch = p.schedule([], SeatBudget(2))
    assert batch.admitted == calls[:2]
    # A preempted call returns to its arrival position, not the tail.
    for c in batch.admitted:
        p.on_run(c)
    p.on_preempt(calls[0])
    assert list(p.waiting_order()) == [calls[0], calls[2]]


PROGRAM_ORDER = CFG.replace(level_order="program")


@pytest.mark.parametrize("policy, old_first", [
    (PLAS(PROGRAM_ORDER), True), (ATLAS(PROGRAM_ORDER), True),
    (PLAS(CFG), False), (MLFQ(PROGRAM_ORDER), False), (FCFS(PROGRAM_ORDER), False),  # "call" is the default
], ids=["plas-program-order", "atlas-program-order", "plas", "mlfq", "fcfs"])
def test_inside_a_level_the_older_program_goes_first(policy, old_first):
    """Same level, the younger program's call waiting first: level_order "program" serves the program
    that arrived first (a level's programs finish one after another, not all late together); "call",
    FCFS and MLFQ keep each call's own arrival."""
    table = ProcessTable()
    table.start("old", now=0.0)
    table.start("young", now=5.0)
    young = arrive(table, policy, "young", now=6.0)
    old = arrive(table, policy, "old", now=7.0)
    assert old.level == young.level
    assert list(policy.waiting_order()) == ([old, young] if old_first else [young, old])
    assert policy.schedule([], SeatBudget(1)).admitted == [old if old_first else young]


def test_strict_priority_prefers_lower_levels():
    table, p = ProcessTable(), PLAS(CFG)
    table.start("heavy").service = 30
    heavy = arrive(table, p, "heavy")
    fresh = arrive(table, p, "fresh")
    assert p.schedule([], SeatBudget(1)).admitted == [fresh]
    assert heavy.level > fresh.level


def test_schedule_stops_at_first_call_that_does_not_fit():
    class Tokens:
        def __init__(self, free):
            self.free = free
        def fits(self, call):
            return call.prompt_tokens <= self.free
        def reserve(self, call):
            self.free -= call.prompt_tokens
        def release(self, call):
            self.free += call.prompt_tokens

    table, p = ProcessTable(), PLAS(CFG)
    a = arrive(table, p, "a", prompt_tokens=5)
    arrive(table, p, "b", prompt_tokens=10)
    arrive(table, p, "c", prompt_tokens=1)  # would fit, but b blocks it: strict priority
    assert p.schedule([], Tokens(8)).admitted == [a]


def test_preemption_for_a_clearly_better_waiting_call_only():
    table, p = ProcessTable(), PLAS(CFG)
    r = run(p, arrive(table, p, "long"))
    p.charge(r, decode_tokens=15)  # level 1
    table.start("same").service = 12
    same = arrive(table, p, "same")
    assert same.level == r.level == 1  # same level as the running call: no preemption
    assert p.schedule([r], SeatBudget(1, 1)).preempted == []
    better = arrive(table, p, "better")
    batch = p.schedule([r], SeatBudget(1, 1))
    assert (batch.preempted, batch.admitted) == ([r], [better])


def test_preempt_gap_requires_a_clearly_better_level():
    table, p = ProcessTable(), PLAS(CFG.replace(preempt_gap=2))
    r = run(p, arrive(table, p, "long"))
    p.charge(r, decode_tokens=25)  # level 2
    table.start("one_better").service = 12
    one = arrive(table, p, "one_better")  # level 1: better, but by less than the gap
    assert p.schedule([r], SeatBudget(1, 1)).preempted == []
    p.remove(one)
    two = arrive(table, p, "two_better")  # level 0: two levels better
    batch = p.schedule([r], SeatBudget(1, 1))
    assert (batch.preempted, batch.admitted) == ([r], [two])


def test_preemptions_per_schedule_are_bounded():
    table, p = ProcessTable(), PLAS(CFG.replace(max_preemptions=1))
    running = []
    for name in "abc":
        c = run(p, arrive(table, p, name))
        p.charge(c, decode_tokens=30)
        running.append(c)
    for name in "xyz":
        arrive(table, p, name)
    batch = p.schedule(running, SeatBudget(3, 3))
    assert len(batch.preempted) == 1 and len(batch.admitted) == 1
    assert batch.preempted[0] is running[-1]  # the worst (latest arrival in the worst level)


def test_fcfs_never_preempts_or_demotes():
    table, p = ProcessTable(), FCFS(CFG)
    r = run(p, arrive(table, p, "a"))
    p.charge(r, decode_tokens=10_000)
    arrive(table, p, "b")
    assert r.level == 0
    assert p.schedule([r], SeatBudget(1, 1)).preempted == []


def test_starvation_promotion_and_which_counters_reset():
    table, p = ProcessTable(), PLAS(CFG)  # beta = 4
    table.start("s").service = 12  # enters level 1; ratio (0 + w) / max(1, 12 + 0)
    c = arrive(table, p, "s")
    assert c.level == 1
    p.tick(47)
    assert c.level == 1  # 47 / 12 < 4
    p.tick(1)
    assert c.level == 0  # 48 / 12 >= 4: promoted
    assert (c.starve_wait, c.starve_service) == (0, 0)  # call-level ratio counters reset
    p.tick(5)
    p.on_run(c)
    assert c.wait == 53  # the never-reset accumulator keeps all waiting time
    p.charge(c, decode_tokens=3)
    p.remove(c)
    table.finish_call(c)
    assert table.get("s").wait == 53 and table.get("s").service == 15


def test_starvation_uses_program_wait_for_plas_but_not_mlfq():
    table = ProcessTable()
    prog = table.start("p")
    prog.service, prog.wait = 12, 40
    plas, mlfq = PLAS(CFG), MLFQ(CFG)
    c1 = arrive(table, plas, "p")
    p2 = table.start("q")
    p2.service, p2.wait = 12, 40
    c2 = arrive(table, mlfq, "q")
    run(mlfq, c2)
    mlfq.charge(c2, decode_tokens=12)
    mlfq.on_preempt(c2)
    assert c2.level == 1
    plas.tick(8)
    mlfq.tick(8)
    assert c1.level == 0  # (40 + 8) / 12 >= 4
    assert c2.level == 1  # MLFQ ignores program history: 8 / 12 < 4


def test_next_event_step_predicts_promotion():
    table, p = ProcessTable(), PLAS(CFG)
    table.start("s").service = 12
    c = arrive(table, p, "s")
    assert p.next_event_step() == 48
    p.on_run(c)
    assert p.next_event_step() is None  # the running call has no deadline


def test_atlas_parallel_calls_share_a_level():
    table, p = ProcessTable(), ATLAS(CFG)
    a = run(p, arrive(table, p, "tree", thread="0"))
    b = arrive(table, p, "tree", thread="1")
    p.charge(a, decode_tokens=10)  # a leaves level 0: its waiting sibling follows (gang)
    assert a.level == b.level == 1
    assert list(p.waiting_order()) == [b]
    c = arrive(table, p, "tree", thread="2")
    assert c.level == 1  # a new parallel call joins its siblings' level


def test_plas_does_not_gang_demote():
    table, p = ProcessTable(), PLAS(CFG)
    a = run(p, arrive(table, p, "tree", thread="0"))
    b = arrive(table, p, "tree", thread="1")
    p.charge(a, decode_tokens=10)
    assert (a.level, b.level) == (1, 0)


def test_atlas_max_rule_takes_the_critical_path():
    table, p = ProcessTable(rule="critical_path"), ATLAS(CFG)
    calls = [run(p, arrive(table, p, "t", thread=str(i))) for i in range(3)]
    for call, tokens in zip(calls, (5, 30, 12)):
        p.charge(call, decode_tokens=tokens)
        p.remove(call)
        table.finish_call(call)
    assert table.get("t").service == 30  # the longest branch, not the sum (47)
    nxt = arrive(table, p, "t")
    assert nxt.start_service == 30 and nxt.level == 2


def test_srpt_orders_by_remaining_work():
    table, p = ProcessTable(), SRPT()
    big, small = table.new_call("big"), table.new_call("small")
    big.remaining, small.remaining = 100, 3
    p.add(big)
    p.add(small)
    assert list(p.waiting_order()) == [small, big]
    run(p, big)
    assert p.schedule([big], SeatBudget(1, 1)).preempted == [big]


def test_lifecycle_guards():
    table, p = ProcessTable(), PLAS(CFG)
    c = arrive(table, p, "a")
    with pytest.raises(ValueError, match="not running"):
        p.on_preempt(c)
    with pytest.raises(ValueError, match="decode_tokens=-1"):
        p.charge(c, decode_tokens=-1)
    run(p, c)
    with pytest.raises(ValueError, match="not waiting"):
        p.on_run(c)
    assert c.state is CallState.RUNNING


@pytest.mark.parametrize("kwargs, field", [
    ({"boundaries": (0, 20, 10, math.inf)}, "boundaries"),
    ({"boundaries": (5, 10, math.inf)}, "boundaries"),
    ({"boundaries": (0, 10)}, "boundaries"),
    ({"quanta": (1, 2)}, "quanta"),
    ({"quanta": (1, 0, 1, 1, 1, 1, 1, 1)}, "quanta"),
    ({"beta": 0}, "beta"),
    ({"prefill_weight": -1}, "prefill_weight"),
    ({"max_preemptions": -1}, "max_preemptions"),
    ({"preempt_gap": 0}, "preempt_gap"),
    ({"service_rule": "sum"}, "service_rule"),
    ({"level_order": "random"}, "level_order"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PolicyConfig(**kwargs)


def test_config_from_env_and_dict():
    cfg = PolicyConfig.from_env({"AUTELLIX_BETA": "2.5", "AUTELLIX_BOUNDARIES": "0,64,inf",
                                 "AUTELLIX_MAX_PREEMPTIONS": "4", "AUTELLIX_STARVATION": "off",
                                 "AUTELLIX_PREEMPT_GAP": "3", "AUTELLIX_SERVICE_RULE": "critical_path",
                                 "AUTELLIX_LEVEL_ORDER": "call"})
    assert (cfg.beta, cfg.boundaries, cfg.max_preemptions, cfg.starvation, cfg.preempt_gap, cfg.service_rule,
            cfg.level_order) == (2.5, (0, 64, math.inf), 4, False, 3, "critical_path", "call")
    with pytest.raises(ConfigError, match="bogus"):
        PolicyConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="beta"):
        PolicyConfig.from_dict({"beta": "fast"})
    with pytest.raises(ConfigError, match="starvation"):  # not silently False
        PolicyConfig.from_dict({"starvation": "maybe"})
    with pytest.raises(ConfigError, match="unknown 'lottery'"):
        make_policy("lottery")


def test_on_level_change_reports_every_move():
    table, p = ProcessTable(), ATLAS(CFG)
    moved = []
    p.on_level_change = moved.append
    a = run(p, arrive(table, p, "t", thread="0"))
    b = arrive(table, p, "t", thread="1")
    p.charge(a, decode_tokens=10)  # demotion of a, gang move of b
    assert moved == [a, b]
    table.start("s").service = 12
    s = arrive(table, p, "s")
    p.tick(96)  # beta 4 x 12 = 48 steps for s; b (service 0) waited long enough too
    assert set(moved[2:]) == {s, b} and s.level == b.level == 0


def test_while_the_cache_binds_the_order_is_program_fcfs_without_preemption():
    """Adaptive order (docs/policy.md, rule 8): while `kv_bound` says the KV cache binds, the program
    that arrived first goes first whatever its level, and nothing is preempted for the order; once it
    stops binding, the PLAS order is back, levels intact."""
    table, p = ProcessTable(), PLAS(CFG)
    binds = [True]
    p.bind_kv(lambda: binds[0])
    table.start("old", now=0.0).service = 30  # level 2
    table.start("young", now=5.0)  # level 0
    young = arrive(table, p, "young", now=6.0)
    old = arrive(table, p, "old", now=7.0)
    assert (old.level, young.level) == (2, 0)
    assert list(p.waiting_order()) == [old, young]
    running = run(p, arrive(table, p, "running", now=8.0))
    p.charge(running, decode_tokens=30)  # level 2: young outranks it by two levels
    assert p.schedule([running], SeatBudget(1, 1)).preempted == []
    binds[0] = False
    assert list(p.waiting_order()) == [young, old]
    assert p.schedule([running], SeatBudget(1, 1)).preempted == [running]
    off = PLAS(CFG.replace(adaptive_order=False))
    off.bind_kv(lambda: True)
    assert off.bound() is False
