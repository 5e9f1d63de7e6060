"""AutellixScheduler inside vLLM's real V1 Scheduler, with a fake model runner (no weights, no engine).

Each test builds the scheduler with the policy's knobs passed through vLLM's additional_config, drives
schedule() / update_from_output() the way EngineCore.step does, and checks what vLLM actually scheduled.
"""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("vllm")

from vllm.v1.request import RequestStatus  # noqa: E402

from autellix.context import parse_context  # noqa: E402
from autellix.engine.fake import FIRST_TOKEN, Runner, ctx, make_request, make_scheduler  # noqa: E402

# Two levels [0, 8) and [8, inf), prompt tokens free: a call is demoted after 8 decode tokens.
# Two levels: any better one preempts.
SMALL = {"boundaries": "0,8,inf", "prefill_weight": 0.0, "preempt_gap": 1}


def expected_tokens(n: int) -> list[int]:
    return list(range(FIRST_TOKEN, FIRST_TOKEN + n))


def assert_heap(sched) -> None:
    """The waiting queue yields its requests in (priority, the policy's FCFS order) order, each once."""
    order = list(sched.waiting)
    keys = [(r.priority, sched.autellix.order(sched.autellix_call(r.request_id))) for r in order]
    assert keys == sorted(keys) and len(set(map(id, order))) == len(order) == len(sched.waiting)
    if order:
        assert sched.waiting.peek_request() is order[0]


def test_little_service_runs_before_much_service():
    sched = make_scheduler("plas", max_num_seqs=1, **SMALL)
    run = Runner(sched)
    heavy = make_request(ctx("heavy", service=100), max_tokens=4)
    fresh = make_request(ctx("fresh"), max_tokens=4)
    run.add(heavy, fresh)  # heavy arrived first
    assert (heavy.priority, fresh.priority) == (1, 0)
    run.run()
    assert run.finished == [fresh.request_id, heavy.request_id]
    assert run.tokens[heavy.request_id] == expected_tokens(4)


def test_stock_and_fcfs_policies_keep_arrival_order():
    for policy in (None, "fcfs"):
        sched = make_scheduler(policy, max_num_seqs=1, **({} if policy is None else SMALL))
        run = Runner(sched)
        heavy = make_request(ctx("heavy", service=100), max_tokens=4)
        fresh = make_request(ctx("fresh"), max_tokens=4)
        run.add(heavy, fresh)
        run.run()
        assert run.finished == [heavy.request_id, fresh.request_id], policy


def test_single_engine_mode_accumulates_program_service():
    """Without gateway snapshots the plugin's own table carries a program's service between calls."""
    sched = make_scheduler("plas", max_num_seqs=1, **SMALL)
    run = Runner(sched)
    first = make_request(ctx("p"), max_tokens=10)
    run.add(first)
    run.run()
    assert sched.table.get("p").service == 10
    again = make_request(ctx("p"), max_tokens=2)
    other = make_request(ctx("q"), max_tokens=2)
    run.add(again, other)
    assert (again.priority, other.priority) == (1, 0)  # p enters at the level of its 10 tokens
    run.run()
    assert run.finished[-2:] == [other.request_id, again.request_id]
    assert sched.table.get("p").service == 12


def test_demotion_after_quantum_lets_a_better_call_in():
    sched = make_scheduler("plas", max_num_seqs=1, **SMALL)
    run = Runner(sched)
    a = make_request(ctx("a"), max_tokens=20)
    b = make_request(ctx("b"), max_tokens=3)
    run.add(a, b)  # same level: FCFS, a runs first
    for _ in range(7):
        run.step()
    assert a.priority == 0 and a.status == RequestStatus.RUNNING
    run.step()  # a's 8th token: quantum of level 0 used up
    assert a.priority == 1 and sched.autellix_call(a.request_id).level == 1
    run.step()  # b (level 0) now clearly outranks a (level 1): a is preempted, b admitted
    assert run.scheduled[-1] == [b.request_id]
    assert a.status == RequestStatus.PREEMPTED and a.num_preemptions == 1
    run.run()
    assert run.finished == [b.request_id, a.request_id]
    assert run.tokens[a.request_id] == expected_tokens(20)


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_preempted_call_resumes_with_output_intact(async_scheduling):
    """Also for AutellixAsyncScheduler (GPU engines keep vLLM's async scheduling on)."""
    sched = make_scheduler("plas", max_num_seqs=1, async_scheduling=async_scheduling, **SMALL)
    run = Runner(sched)
    heavy = make_request(ctx("heavy", service=100), max_tokens=30)
    run.add(heavy)
    for _ in range(5):
        run.step()
    fresh = make_request(ctx("fresh"), prompt_tokens=12, max_tokens=5)
    run.add(fresh)
    run.step()
    assert run.scheduled[-1] == [fresh.request_id]  # the batch was full: heavy made room at once
    assert heavy.status == RequestStatus.PREEMPTED
    assert sched.autellix_stats["preemptions"] == 1
    run.run()
    assert run.finished == [fresh.request_id, heavy.request_id]
    assert run.tokens[heavy.request_id] == expected_tokens(30)  # resumed by recompute, nothing lost
    assert run.tokens[fresh.request_id] == expected_tokens(5)
    assert heavy.num_preemptions == 1


def test_waiting_queue_serves_the_older_program_first():
    """Inside a level vLLM's queue follows the policy's order; with level_order "program", the program
    the engine saw first."""
    sched = make_scheduler("plas", max_num_seqs=1, level_order="program", **SMALL)
    run = Runner(sched)
    run.add(make_request(ctx("old"), max_tokens=2))
    run.run()  # the engine now knows "old" (2 tokens of service: still level 0)
    blocker = make_request(ctx("blocker"), max_tokens=4)
    run.add(blocker)
    run.step()
    young, old = make_request(ctx("young"), max_tokens=2), make_request(ctx("old"), max_tokens=2)
    run.add(young, old)  # young's call is queued first
    assert young.priority == old.priority == 0
    assert_heap(sched)
    run.run()
    assert run.finished[-3:] == [blocker.request_id, old.request_id, young.request_id]


def test_trace_logs_each_call_event_in_order(caplog):
    """trace=True: one line per arrive / run / preempt / leave, in the scheduler's own order."""
    sched = make_scheduler("plas", max_num_seqs=1, trace=True, **SMALL)
    run = Runner(sched)
    heavy = make_request(ctx("heavy", service=100), max_tokens=6)
    run.add(heavy)
    run.step()
    fresh = make_request(ctx("fresh"), max_tokens=2)
    with caplog.at_level(logging.INFO, logger="vllm.autellix"):
        run.add(fresh)
        run.run()
    traced = [r.getMessage() for r in caplog.records if "autellix trace:" in r.getMessage()]
    events = [tuple(m.split()[2:4]) for m in traced]
    h, f = heavy.request_id, fresh.request_id
    assert events == [("arrive", f), ("preempt", h), ("run", f), ("leave", f), ("run", h), ("leave", h)]


def test_stock_vllm_does_not_preempt_for_priority():
    sched = make_scheduler(None, max_num_seqs=1)
    run = Runner(sched)
    heavy = make_request(ctx("heavy", service=100), max_tokens=30)
    run.add(heavy)
    for _ in range(5):
        run.step()
    fresh = make_request(ctx("fresh"), max_tokens=5)
    run.add(fresh)
    run.run()
    assert run.finished == [heavy.request_id, fresh.request_id]


def test_preemptions_per_step_are_bounded():
    sched = make_scheduler("plas", max_num_seqs=3, max_preemptions=1, **SMALL)
    run = Runner(sched)
    heavy = [make_request(ctx(f"h{i}", service=100), max_tokens=40) for i in range(3)]
    run.add(*heavy)
    run.step()
    run.add(*[make_request(ctx(f"f{i}"), max_tokens=3) for i in range(3)])
    run.step()
    assert sched.autellix_stats["preemptions"] == 1
    run.step()
    assert sched.autellix_stats["preemptions"] == 2
    run.run()
    assert all(run.tokens[h.request_id] == expected_tokens(40) for h in heavy)


def test_kv_pressure_preempts_for_a_better_call():
    """Seats are free but the KV cache is not: a better waiting call still displaces a worse one."""
    sched = make_scheduler("plas", max_num_seqs=4, num_blocks=8, **SMALL)  # 7 usable blocks of 16
    run = Runner(sched)
    heavy = make_request(ctx("heavy", service=100), prompt_tokens=80, max_tokens=30)
    run.add(heavy)
    run.step()
    fresh = make_request(ctx("fresh"), prompt_tokens=40, max_tokens=3)  # needs 3 blocks, 2 free
    run.add(fresh)
    run.step()
    assert fresh.request_id in run.scheduled[-1] and heavy.status == RequestStatus.PREEMPTED
    run.run()
    assert run.finished == [fresh.request_id, heavy.request_id]
    assert run.tokens[heavy.request_id] == expected_tokens(30)


def test_fcfs_within_a_level_and_after_preemption():
    sched = make_scheduler("plas", max_num_seqs=1, **SMALL)
    run = Runner(sched)
    same = [make_request(ctx(f"p{i}"), max_tokens=3) for i in range(4)]
    run.add(*same)
    run.run()
    assert run.finished == [r.request_id for r in same]

    # Two level-1 calls; the running one is preempted by a level-0 call and still goes before the other.
    sched = make_scheduler("plas", max_num_seqs=1, **SMALL)
    run = Runner(sched)
    a = make_request(ctx("a", service=50), max_tokens=6)
    b = make_request(ctx("b", service=50), max_tokens=6)
    run.add(a, b)
    run.step()
    c = make_request(ctx("c"), max_tokens=2)
    run.add(c)
    run.run()
    assert run.finished == [c.request_id, a.request_id, b.request_id]


@pytest.mark.parametrize("starvation", [True, False])
def test_starving_call_is_promoted(starvation):
    # Level 0 never demotes (quantum 1000); beta=2 and program service 10: promotion after 20 steps.
    sched = make_scheduler("plas", max_num_seqs=1, boundaries="0,8,inf", quanta="1000,1000",
                           prefill_weight=0.0, beta=2.0, starvation=starvation)
    run = Runner(sched)
    long = make_request(ctx("long"), max_tokens=40)
    starved = make_request(ctx("starved", service=10), max_tokens=2)
    run.add(long, starved)
    for _ in range(5):
        run.step()
    late = make_request(ctx("late"), max_tokens=2)
    run.add(late)
    assert starved.priority == 1
    for _ in range(25):
        run.step()
    assert starved.priority == (0 if starvation else 1)
    assert_heap(sched)
    run.run()
    order = run.finished
    if starvation:  # promoted to level 0, where it arrived before `late`
        assert order == [long.request_id, starved.request_id, late.request_id]
        assert sched.autellix.promotions == 1
    else:
        assert order == [long.request_id, late.request_id, starved.request_id]


@pytest.mark.parametrize("policy", ["atlas", "autellix", "plas"])
def test_parallel_calls_of_a_program_share_a_level(policy):
    sched = make_scheduler(policy, max_num_seqs=1, starvation=False, **SMALL)
    run = Runner(sched)
    t1 = make_request(ctx("tree", thread="1"), max_tokens=12)
    t2 = make_request(ctx("tree", thread="2"), max_tokens=3)
    run.add(t1, t2)
    for _ in range(8):  # t1 runs 8 tokens: demoted to level 1
        run.step()
    gang = policy != "plas"
    assert t1.priority == 1
    assert t2.priority == (1 if gang else 0)  # ATLAS: the waiting sibling moves with it
    assert_heap(sched)
    t3 = make_request(ctx("tree", thread="3"), max_tokens=2)
    other = make_request(ctx("other"), max_tokens=2)
    run.add(t3, other)
    assert t3.priority == (1 if gang else 0)  # a new parallel call joins its program's level
    run.run()
    if gang:  # the other program's fresh call goes first; the tree's calls follow, in arrival order
        assert run.finished == [other.request_id, t1.request_id, t2.request_id, t3.request_id]
    else:  # PLAS: t2 and t3 stay at level 0 (program service counts only finished calls)
        assert run.finished == [t2.request_id, t3.request_id, other.request_id, t1.request_id]


def test_calls_without_program_context_still_run():
    sched = make_scheduler("autellix", max_num_seqs=2, **SMALL)
    run = Runner(sched)
    plain = [make_request(None, max_tokens=4), make_request({}, max_tokens=4),
             make_request({"other_plugin": 1}, max_tokens=4)]
    run.add(*plain)
    run.run()
    assert sorted(run.finished) == sorted(r.request_id for r in plain)
    assert all(run.tokens[r.request_id] == expected_tokens(4) for r in plain)
    assert len(sched.table) == 0  # anonymous one-call programs leave nothing behind
    assert sched.autellix_stats["problems"] == 0


GARBLED = [
    {"autellix_program": 5.5},
    {"autellix_program": ["a", "b"]},
    {"autellix_program": "x" * 100_000},
    {"autellix_program": ""},
    {"autellix_program": "p", "autellix_service": "lots"},
    {"autellix_program": "p", "autellix_service": -1},
    {"autellix_program": "p", "autellix_service": float("nan")},
    {"autellix_program": "p", "autellix_wait": float("inf")},
    {"autellix_program": "p", "autellix_thread": True},
    {"autellix_program": "p", "autellix_thread": "t" * 1000},
    {"autellix_programme": "p"},
    {"autellix_service": 5},
    {"autellix_program": "p", "autellix_service": [1, 2]},
]


def test_garbled_context_runs_anonymous_and_is_logged_once():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("vllm.autellix")
    log.addHandler(handler)
    try:
        sched = make_scheduler("autellix", max_num_seqs=4, **SMALL)
        run = Runner(sched)
        reqs = [make_request(x, max_tokens=3) for x in GARBLED + GARBLED]  # every problem twice
        run.add(*reqs)
        for r in reqs:
            call = sched.autellix_call(r.request_id)
            assert call.program.ephemeral and call.start_service == 0, r.sampling_params.extra_args
        run.run()
    finally:
        log.removeHandler(handler)
    assert sorted(run.finished) == sorted(r.request_id for r in reqs)
    assert all(run.tokens[r.request_id] == expected_tokens(3) for r in reqs)
    kinds = set()
    for x in GARBLED:
        kinds.update(kind for kind, _ in parse_context(x)[1])
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == len(kinds)  # once per kind of problem, however often it recurs
    assert all(len(r.getMessage()) < 400 for r in warnings)  # huge values are not echoed
    assert len(sched.table) == 0


def test_gateway_snapshots_raise_the_table(monkeypatch):
    sched = make_scheduler("plas", max_num_seqs=1, **SMALL)
    run = Runner(sched)
    r = make_request(ctx("g", service=30, wait=7), max_tokens=2)
    run.add(r)
    call = sched.autellix_call(r.request_id)
    assert (call.start_service, call.start_wait, r.priority) == (30, 7, 1)
    run.run()
    assert sched.table.get("g").service == 32


def test_the_class_a_call_names_sets_its_programs_class():
    sched = make_scheduler("plas", max_num_seqs=4, **SMALL)
    run = Runner(sched)
    run.add(make_request(ctx("b", batch=True), max_tokens=2), make_request(ctx("i"), max_tokens=2))
    assert sched.table.get("b").batch and not sched.table.get("i").batch
    run.add(make_request(ctx("b"), max_tokens=2))  # names no class: the program keeps its own
    assert sched.table.get("b").batch
    run.add(make_request(ctx("b", batch=False), max_tokens=2))
    assert not sched.table.get("b").batch
    run.run()


def test_additional_config_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("AUTELLIX_POLICY", "mlfq")
    sched = make_scheduler("plas")  # additional_config wins over the environment
    assert sched.autellix_name == "plas"


def test_abort_forgets_the_call():
    sched = make_scheduler("plas", max_num_seqs=1, **SMALL)
    run = Runner(sched)
    running = make_request(ctx("a"), max_tokens=50)
    waiting = make_request(ctx("b"), max_tokens=50)
    run.add(running, waiting)
    run.step()
    sched.finish_requests([running.request_id, waiting.request_id], RequestStatus.FINISHED_ABORTED)
    assert sched.autellix_call(running.request_id) is None
    assert sched.autellix.num_waiting == 0
    assert not sched.table.get("a").calls and not sched.table.get("b").calls
    assert sched.get_num_unfinished_requests() == 0


def test_vllm_memory_preemption_follows_levels():
    """When KV runs out mid-decode, vLLM's own victim choice (max priority) picks our worst level."""
    sched = make_scheduler("plas", max_num_seqs=2, num_blocks=9, **SMALL)  # 8 usable blocks
    run = Runner(sched)
    worse = make_request(ctx("worse", service=100), prompt_tokens=60, max_tokens=40)
    better = make_request(ctx("better"), prompt_tokens=60, max_tokens=40)
    run.add(better, worse)
    run.run()
    assert run.finished == [better.request_id, worse.request_id]
    assert better.num_preemptions == 0 and worse.num_preemptions >= 1
    assert run.tokens[worse.request_id] == expected_tokens(40)
