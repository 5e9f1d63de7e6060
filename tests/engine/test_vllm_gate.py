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


@pytest.mark.parametrize("adaptive", [True, False])
def test_while_the_cache_binds_the_older_program_runs_first_whatever_its_level(adaptive):
    """The adaptive order (docs/policy.md, rule 8) in vLLM's own queue: three resident programs' next
    calls wait for one seat; the oldest has the most service (the worst level). While the gate is in
    force the oldest runs first and every queued request has priority 0 (program FCFS); with
    `adaptive_order` off, PLAS runs the least served first. Once the gate lifts, levels are priorities."""
    sched = make_scheduler("autellix", num_blocks=300, max_num_seqs=1, boundaries="0,100,1000,inf",
                           admit_high=0.1, admit_low=0.05, adaptive_order=adaptive, **HOLDS)
    run = Runner(sched)
    histories = {p: run_call(run, p, f"{p}1") for p in ("old", "young", "mid")}
    service = {"old": 5000.0, "young": None, "mid": 500.0}  # levels 2, 0, 1
    for p in ("young", "mid", "old"):
        run.add(make_request(ctx(p, service=service[p]), prompt=histories[p] + [7] * 8, request_id=f"{p}2"))
    level = {p: sched.autellix_call(f"{p}2").level for p in service}
    assert level == {"old": 2, "young": 0, "mid": 1}
    holds_failing(sched)  # the working sets (3 x ~11 blocks) are past admit_high: the gate is in force
    run.step()
    assert run.scheduled[-1] == (["old2"] if adaptive else ["young2"])
    queued = {r.request_id: r.priority for r in sched.waiting}
    assert queued == ({"young2": 0, "mid2": 0} if adaptive else {"mid2": 1, "old2": 2})
    sched.holds.gate.missed = 0.0
    sched.holds.gate.in_force = False  # the gate lifts: level order again
    run.step()
    assert {r.request_id: r.priority for r in sched.waiting} == \
        {f"{p}2": level[p] for p in ("mid",) + (("young",) if adaptive else ("old",))}
    run.run()
    assert {"old2", "young2", "mid2"} <= set(run.finished)
    check_refs(sched)
