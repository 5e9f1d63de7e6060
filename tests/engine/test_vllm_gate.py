"""The program gate and evict-first inside vLLM's real Scheduler (fake runner, no model).

While holds fail (the gate's thrash signal) a program that is not resident waits parked in vLLM's waiting
queue: vLLM counts it, its schedule loop never sees it. Resident programs over the limit at a tool
boundary are paused. An ended program's history is evicted before any other cached block. Runs in the
release matrix (scripts/vllm_matrix.sh).
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from test_vllm_holds import HOLDS, cached, check_refs, run_call  # noqa: E402
from vllm.v1.request import RequestStatus  # noqa: E402

from autellix.engine.fake import Runner, ctx, make_request, make_scheduler  # noqa: E402


def holds_failing(sched) -> None:
    """Set the gate's thrash signal as if every returning program had missed its whole history (what
    the gate measures on a real engine; set directly so the test isolates what the gate does with it)."""
    sched.holds.gate.missed = 1.0


def test_a_program_waits_parked_while_the_working_sets_are_full_and_runs_once_they_fit():
    sched = make_scheduler("autellix", num_blocks=40, max_num_seqs=4, **HOLDS)  # admit 36, resume < 32
    run = Runner(sched)
    gate = sched.holds.gate
    run_call(run, "a", "a1", prompt_tokens=300, max_tokens=4)
    run_call(run, "b", "b1", prompt_tokens=300, max_tokens=4)
    assert set(gate.working) == {"a", "b"} and gate.total == 38  # 2 x 304 / 16
    holds_failing(sched)

    c1 = make_request(ctx("c"), prompt_tokens=300, max_tokens=4, request_id="c1")
    run.add(c1)
    assert sched.waiting.is_parked(c1) and not sched.waiting and sched.get_num_unfinished_requests() == 1
    run.step()  # a and b sit at a tool boundary over the limit: one is paused, then c fits and runs
    paused = ({"a", "b"} - set(gate.working)).pop()
    assert "c" in gate.working and "c1" in run.scheduled[-1] and gate.counters.programs_paused == 1
    assert not sched.holds.policy.by_program.get(paused)  # a paused program's holds go with it

    back = make_request(ctx(paused), prompt_tokens=300, max_tokens=4, request_id=f"{paused}2")
    run.add(back)  # the paused program's next call waits at the gate like a new program's
    assert sched.waiting.is_parked(back)
    run.step()  # the other program now idles at a tool boundary over the limit: paused in its turn
    assert back.request_id in run.scheduled[-1] and gate.counters.programs_paused == 2
    run.run()
    assert {back.request_id, "c1"} <= set(run.finished)
    assert sched.holds.parked == {} and len(sched.waiting) == 0
    check_refs(sched)


def test_a_parked_program_stays_parked_while_resident_ones_run_and_gets_in_when_one_ends():
    sched = make_scheduler("autellix", num_blocks=100, max_num_seqs=4, admit_high=0.5, admit_low=0.4,
                           **HOLDS)  # admit while under 50 blocks; once closed, resume under 40
    run = Runner(sched)
    gate = sched.holds.gate
    ha = run_call(run, "a", "a1", prompt_tokens=400, max_tokens=4)
    hb = run_call(run, "b", "b1", prompt_tokens=400, max_tokens=4)
    assert gate.total == 52  # 2 x ceil(404 / 16)
    holds_failing(sched)
    a2 = make_request(ctx("a"), prompt=ha + [5] * 8, max_tokens=16, request_id="a2")
    b2 = make_request(ctx("b"), prompt=hb + [5] * 8, max_tokens=16, request_id="b2")
    c1 = make_request(ctx("c"), prompt_tokens=160, max_tokens=4, request_id="c1")
    run.add(a2, b2, c1)  # a and b are resident: their calls run whatever the gate says
    assert not sched.waiting.is_parked(a2) and not sched.waiting.is_parked(b2) and sched.waiting.is_parked(c1)
    for _ in range(3):
        run.step()
        assert "c1" not in run.scheduled[-1] and sched.waiting.is_parked(c1)  # nobody at a tool boundary
    sched.holds.end("b")  # b ended (the gateway's notice) with b2 still decoding: its room is free
    run.step()
    assert "c1" in run.scheduled[-1] and "a2" not in run.finished and "b2" not in run.finished
    run.run()
    assert "b" not in gate.working and gate.counters.programs_paused == 0
    check_refs(sched)


def test_an_aborted_parked_call_leaves_nothing_behind():
    sched = make_scheduler("autellix", num_blocks=40, max_num_seqs=4, **HOLDS)
    run = Runner(sched)
    run_call(run, "a", "a1", prompt_tokens=300, max_tokens=4)
    run_call(run, "b", "b1", prompt_tokens=300, max_tokens=4)
    holds_failing(sched)
    c1 = make_request(ctx("c"), prompt_tokens=300, max_tokens=4, request_id="c1")
    run.add(c1)
    assert sched.waiting.is_parked(c1)
    sched.finish_requests(["c1"], RequestStatus.FINISHED_ABORTED)
    assert sched.holds.parked == {} and len(sched.waiting) == 0 and not sched.has_unfinished_requests()
    check_refs(sched)


def test_an_ended_programs_history_is_evicted_before_any_other_cached_block():
    sched = make_scheduler("autellix", num_blocks=40, **HOLDS)
    run = Runner(sched)
    x = run_call(run, "x", "x1")  # 160 + 16 tokens: 11 blocks, 10 of them cached and held
    y = run_call(run, "y", "y1")
    sched.holds.end("x")  # x ended: its blocks go to the front of the free queue
    sched.holds.release_all()  # y's hold ends the ordinary way: its blocks stay LRU-ordered
    run_call(run, "filler", "f1", prompt_tokens=150, max_tokens=4)  # takes 10 blocks
    run_call(run, "y", "y2", prompt=y + [5] * 8)
    run_call(run, "x", "x2", prompt=x + [5] * 8)
    assert run.hits["y2"] == cached(y) and run.hits["x2"] == 0
    check_refs(sched)
