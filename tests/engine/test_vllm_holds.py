"""KV holds inside vLLM's real Scheduler (fake runner, no model): program-level residency in the plugin.

A hold keeps a finished call's cached blocks referenced until the program's next call is admitted; it
gives way to memory pressure before vLLM would refuse or preempt anything. Runs in the release matrix
(scripts/vllm_matrix.sh), so every supported vLLM's block pool is exercised.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

pytest.importorskip("vllm")

from autellix.engine.fake import BLOCK, Runner, ctx, make_request, make_scheduler  # noqa: E402

# Holds last hold_slack x the expected pause (here 2 x 5 s): long enough that no test waits them out.
HOLDS = {"hold_prior_s": 5.0, "hold_cap": 1.0}


def run_call(run: Runner, program: str, rid: str, prompt_tokens: int = 160, prompt: list[int] | None = None,
             max_tokens: int = 16) -> list[int]:
    """Run one call to completion; return its prompt + output (what the program's next turn extends)."""
    request = make_request(ctx(program), prompt_tokens=prompt_tokens, prompt=prompt, max_tokens=max_tokens,
                           request_id=rid)
    run.add(request)
    run.run()
    return list(request.prompt_token_ids) + list(request.output_token_ids)


def fillers(run: Runner, n: int, tokens: int = 200) -> None:
    for k in range(n):
        run_call(run, f"filler-{k}", f"f{k}", prompt_tokens=tokens, max_tokens=4)


def cached(history: list[int]) -> int:
    """Tokens of `history` in full blocks whose KV was computed (its last token never is)."""
    return (len(history) - 1) // BLOCK * BLOCK


def check_refs(sched) -> None:
    """Every block's reference count is exactly its live requests' plus the holds' references."""
    manager, pool = sched.kv_cache_manager, sched.kv_cache_manager.block_pool
    want: Counter = Counter()
    for rid in sched.requests:
        for group in manager.get_blocks(rid).blocks:
            want.update(id(b) for b in group if not b.is_null)
    if sched.holds is not None:
        for blocks in sched.holds.blocks.values():
            want.update(id(b) for b in blocks)
    for block in pool.blocks:
        if not block.is_null:
            assert block.ref_cnt == want[id(block)], (block.block_id, block.ref_cnt, want[id(block)])


def check_parked(sched) -> None:
    """The gate's parked calls are exactly the queue's parked requests, of programs not resident."""
    holds, queue = sched.holds, sched.waiting
    parked = [r for requests in holds.parked.values() for r in requests]
    assert all(queue.is_parked(r) for r in parked) and len(queue) - len(list(queue)) == len(parked)
    assert not any(holds.gate.admitted(pid) for pid in holds.parked)


def test_a_held_history_survives_fillers_that_evict_it_without_holds():
    hit = {}
    for residency in (True, False):
        sched = make_scheduler("autellix", num_blocks=40, residency=residency, **HOLDS)
        run = Runner(sched)
        history = run_call(run, "agent", "a1")
        fillers(run, 6)  # 6 x 12 cached blocks through a 39-block pool
        run_call(run, "agent", "a2", prompt=history + list(range(500, 520)))
        hit[residency] = run.hits["a2"]
        check_refs(sched)
    assert hit[True] == cached(history) == 160
    assert hit[False] == 0


def test_memory_pressure_releases_holds_before_any_preemption(monkeypatch):
    sched = make_scheduler("autellix", num_blocks=32, max_num_seqs=2, **HOLDS)
    preempted = []
    preempt = sched._preempt_request
    monkeypatch.setattr(sched, "_preempt_request", lambda r, *a, **k: (preempted.append(r.request_id),
                                                                      preempt(r, *a, **k)))
    run = Runner(sched)
    run_call(run, "agent", "a1")
    assert sched.holds.held == 10 and sched.kv_cache_manager.block_pool.get_num_free_blocks() == 21
    run_call(run, "big", "b1", prompt_tokens=400, max_tokens=8)  # needs 26 blocks: only 21 are free
    assert preempted == [] and "a1" not in sched.holds.blocks  # a1's hold gave way, nothing was preempted
    assert sched.holds.policy.counters.holds_released_pressure == 1
    check_refs(sched)


def test_a_released_holds_blocks_are_still_found_by_a_later_prefix_lookup():
    sched = make_scheduler("autellix", num_blocks=64, **HOLDS)
    run = Runner(sched)
    history = run_call(run, "agent", "a1")
    sched.holds.release_all()
    pool = sched.kv_cache_manager.block_pool
    assert sched.holds.held == 0 and pool.get_num_free_blocks() == pool.num_gpu_blocks - 1
    run_call(run, "agent", "a2", prompt=history + [7] * 20)
    assert run.hits["a2"] == cached(history)


def test_holds_follow_the_knobs_and_give_way_to_a_prefix_cache_reset():
    sched = make_scheduler("autellix", num_blocks=64, **HOLDS)
    run = Runner(sched)
    run_call(run, "agent", "a1")
    assert sched.holds.held == 10
    assert sched.reset_prefix_cache() and sched.holds.held == 0
    for settings in ({"residency": False}, {"hold_cap": 0.0}):
        sched = make_scheduler("autellix", num_blocks=64, **{**HOLDS, **settings})
        run = Runner(sched)
        run_call(run, "agent", "a1")
        assert sched.holds is None or sched.holds.held == 0
    assert make_scheduler("fcfs", num_blocks=64).holds is None  # stock order: no residency


def test_random_calls_and_program_ends_leave_no_stray_reference():
    rng = random.Random(7)
    sched = make_scheduler("autellix", num_blocks=120, max_num_seqs=4, **HOLDS)
    run = Runner(sched)
    history: dict[str, list[int]] = {}
    live: dict[str, object] = {}
    calls = 0
    while calls < 1000 or sched.has_requests():
        if calls < 1000 and len(live) < 6:
            program = f"p{rng.randrange(20)}"
            if program not in {getattr(r, "_program", None) for r in live.values()}:
                prefix = history.get(program, []) if rng.random() < 0.8 else []
                new = [rng.randrange(3, 900) for _ in range(rng.randint(4, 120))]
                prompt = (prefix + new)[-400:]
                request = make_request(ctx(program), prompt=prompt, max_tokens=rng.randint(1, 12),
                                       request_id=f"c{calls}")
                request._program = program
                run.add(request)
                live[request.request_id] = request
                calls += 1
        run.step()
        for rid in [rid for rid, r in live.items() if r.is_finished()]:
            r = live.pop(rid)
            history[r._program] = list(r.prompt_token_ids) + list(r.output_token_ids)
            if rng.random() < 0.1:
                sched.holds.end(r._program)  # the program ended: its holds go at once
        check_refs(sched)
        check_parked(sched)
    counters = sched.holds.policy.counters
    assert counters.holds_granted > 500 and counters.holds_released_pressure > 0
    assert counters.programs_gated > 0 and counters.programs_paused > 0 and not sched.holds.parked
    sched.holds.release_all()
    pool = sched.kv_cache_manager.block_pool
    assert all(b.ref_cnt == 0 for b in pool.blocks if not b.is_null)
    assert pool.get_num_free_blocks() == pool.num_gpu_blocks - 1


def test_a_program_end_notice_releases_the_programs_holds_and_holds_nothing_itself():
    from autellix.context import end_notice

    sched = make_scheduler("autellix", num_blocks=64, **HOLDS)
    run = Runner(sched)
    run_call(run, "agent", "a1")
    run_call(run, "other", "o1")
    assert set(sched.holds.blocks) == {"a1", "o1"}
    notice = end_notice("agent")
    run.add(make_request(notice["vllm_xargs"], prompt_tokens=1, max_tokens=notice["max_tokens"],
                         request_id="end-agent"))
    run.run()
    assert set(sched.holds.blocks) == {"o1"}  # the agent's hold went at once; the notice took none
    assert sched.autellix_stats["problems"] == 0
    check_refs(sched)


def test_continuum_pins_a_history_hard_until_its_ttl(monkeypatch):
    """`continuum` in the plugin (policy/systems.py): program-level FCFS with Continuum's hard pins. A pin
    keeps the history through fillers like a hold, but never gives way to memory pressure: a call that
    needs the pinned blocks waits until the pin's TTL (before any pause is seen: hold_prior_s) passes."""
    clock = [1000.0]
    monkeypatch.setattr("autellix.engine.vllm_holds.time.monotonic", lambda: clock[0])
    sched = make_scheduler("continuum", num_blocks=32, max_num_seqs=2, hold_prior_s=5.0)
    assert sched.holds is not None and sched.holds.gate is None and not sched.holds.policy.soft
    run = Runner(sched)
    run_call(run, "agent", "a1")
    for k in range(6):  # anonymous one-call fillers (a live program's would be pinned too)
        run.add(make_request(None, prompt_tokens=200, max_tokens=4, request_id=f"f{k}"))
        run.run()
    assert sched.holds.held == 10 and "a1" in sched.holds.blocks
    run.add(make_request(ctx("big"), prompt_tokens=400, max_tokens=4, request_id="b1"))  # 26 blocks: 21 free
    for _ in range(5):
        run.step()
    assert "b1" not in run.hits and sched.holds.held == 10  # the pin holds: the call waits
    check_refs(sched)
    clock[0] += 5.0  # the TTL passes
    run.run()
    assert "b1" in run.finished and set(sched.holds.blocks) == {"b1"}  # a1's pin expired; b1's is new
    counters = sched.holds.policy.counters
    assert counters.holds_released_pressure == 0 and counters.holds_expired == 1
    check_refs(sched)


@pytest.mark.parametrize("classes", [True, False])
def test_an_interactive_programs_hold_outlives_batch_pressure(classes):
    """Batch holds give way first (docs/policy.md, rule 9); without classes the lower-valued hold goes:
    here the interactive one, which finished last and so is expected back last."""
    sched = make_scheduler("autellix", num_blocks=40, max_num_seqs=2, **HOLDS)
    run = Runner(sched)

    def call(program: str, rid: str, batch: bool, **kw) -> list[int]:
        request = make_request(ctx(program, batch=batch if classes else None), request_id=rid, **kw)
        run.add(request)
        run.run()
        return list(request.prompt_token_ids) + list(request.output_token_ids)

    call("b", "b1", True, prompt_tokens=160, max_tokens=16)
    history = call("i", "i1", False, prompt_tokens=160, max_tokens=16)
    assert set(sched.holds.blocks) == {"b1", "i1"}
    call("b2", "big", True, prompt_tokens=400, max_tokens=8)  # one hold must give way
    assert {"b1", "i1"} & set(sched.holds.blocks) == ({"i1"} if classes else {"b1"})
    call("i", "i2", False, prompt=history + list(range(500, 520)), max_tokens=4)
    assert (run.hits["i2"] == cached(history)) is classes
    check_refs(sched)
