"""`--policy thunderagent`: ThunderAgent's pause gate in the gateway, in front of FakeEngines whose /metrics
report a tiny KV cache (4 blocks of 16 tokens: 64 tokens, threshold 0.9: 57.6). Token counts: the
gateway estimates a chat prompt as characters / 4 + 4; the fake engine reports characters // 4 as its
prompt and `max_tokens` as its output; each token takes 0.05 s, so a call runs for max_tokens x 0.05 s."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from gateway_harness import Harness, MakeHarness, chat

DELAY = 0.05


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def call(h: Harness, program: str, chars: int, max_tokens: int, timeout: float = 30,
         **extra: Any) -> httpx.Response:
    """One chat call of `program` with a prompt of `chars` characters, from its own client."""
    with httpx.Client(base_url=h.gateway.url, trust_env=False, timeout=timeout) as client:
        body = chat(program[0] * chars, max_tokens=max_tokens, **extra)
        return client.post("/v1/chat/completions", headers={"X-Program-ID": program}, json=body)


def at_engine(h: Harness) -> list[str]:
    """The programs whose calls reached the engines, in arrival order (program-end notices left out)."""
    xargs = [r["vllm_xargs"] for r in h.requests()]
    return [x["autellix_program"] for x in xargs if "autellix_end" not in x]


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def gated(make_harness: MakeHarness, **config: Any) -> Harness:
    h = make_harness(n=1, token_delay=DELAY, kv_blocks=4, system="thunderagent", **config)
    assert h.state.pausing is not None and h.state.pool.kv_capacity() == 64  # learned from /metrics
    return h


def start_a(h: Harness, pool: ThreadPoolExecutor, chars: int, max_tokens: int) -> Future[httpx.Response]:
    a = pool.submit(call, h, "A", chars, max_tokens)
    eventually(lambda: at_engine(h) == ["A"])
    return a


def test_a_call_waits_while_another_program_fills_the_cache_and_runs_once_it_pauses(
        make_harness: MakeHarness, pool: ThreadPoolExecutor) -> None:
    h = gated(make_harness)
    a = start_a(h, pool, 200, 20)  # estimate 54 tokens, running for 1 s
    b = pool.submit(call, h, "B", 40, 2)  # 14 more would pass 57.6
    eventually(lambda: "B" in h.state.pausing.waiting)
    assert at_engine(h) == ["A"] and not b.done()
    assert a.result().status_code == 200  # A's context: 50 + 20 = 70 > 57.6, A at a tool boundary: paused
    assert b.result().status_code == 200 and at_engine(h) == ["A", "B"]
    gate = h.state.pausing.gate
    assert not gate.active("A") and gate.pauses == 1 and gate.programs["A"].tokens == 70


def test_a_call_waits_while_an_idle_program_holds_the_cache_and_runs_once_it_ends(
        make_harness: MakeHarness, pool: ThreadPoolExecutor) -> None:
    h = gated(make_harness)
    a = start_a(h, pool, 100, 4)  # estimate 29; context after the call 25 + 4 = 29, under 57.6
    b = pool.submit(call, h, "B", 120, 2)  # estimate 34: 29 + 34 > 57.6
    assert a.result().status_code == 200
    time.sleep(0.3)
    assert at_engine(h) == ["A"] and not b.done() and h.state.pausing.gate.active("A")
    assert h.client.delete("/v1/programs/A").status_code == 200
    assert b.result().status_code == 200 and at_engine(h) == ["A", "B"]
    assert "A" not in h.state.pausing.gate.programs


def test_waiting_programs_resume_smallest_context_first(make_harness: MakeHarness,
                                                        pool: ThreadPoolExecutor) -> None:
    h = gated(make_harness)
    a = start_a(h, pool, 200, 20)  # running for 1 s, paused when it ends (context 70)
    big = pool.submit(call, h, "B", 180, 2)  # estimate 49, comes first
    eventually(lambda: "B" in h.state.pausing.waiting)
    small = pool.submit(call, h, "C", 40, 2)  # estimate 14; 14 + 49 > 57.6: one at a time
    eventually(lambda: "C" in h.state.pausing.waiting)
    assert a.result().status_code == 200 and small.result().status_code == 200
    time.sleep(0.3)  # C's context 10 + 2 = 12 stays; 12 + 49 > 57.6
    assert at_engine(h) == ["A", "C"] and not big.done()
    assert h.client.delete("/v1/programs/C").status_code == 200
    assert big.result().status_code == 200 and at_engine(h) == ["A", "C", "B"]


def test_a_waiting_call_whose_client_leaves_leaves_no_trace(make_harness: MakeHarness,
                                                             pool: ThreadPoolExecutor) -> None:
    h = gated(make_harness)
    a = start_a(h, pool, 200, 20)
    p = h.state.pausing

    def state() -> tuple[Any, ...]:
        return {pid: (q.tokens, q.active, q.running) for pid, q in p.gate.programs.items()}, p.gate.usage

    before = state()
    with pytest.raises(httpx.ReadTimeout):
        call(h, "B", 40, 2, timeout=0.3)  # the client's own timeout ends its wait
    eventually(lambda: not p.waiting)
    assert state() == before and "B" not in p.fresh | set(p.programs)
    assert not h.state.sessions.table.get("B").calls  # its call closed in the process table too
    assert a.result().status_code == 200 and at_engine(h) == ["A"]


def test_a_streamed_answers_usage_is_its_programs_context(make_harness: MakeHarness) -> None:
    h = gated(make_harness)
    with h.client.stream("POST", "/v1/chat/completions", headers={"X-Program-ID": "S"},
                         json=chat("s" * 80, max_tokens=3, stream=True)) as r:
        assert r.status_code == 200 and r.read().endswith(b"data: [DONE]\n\n")
    assert h.state.pausing.gate.programs["S"].tokens == 80 // 4 + 3


def test_without_the_pause_gate_nothing_waits(make_harness: MakeHarness, pool: ThreadPoolExecutor) -> None:
    h = make_harness(n=1, token_delay=DELAY, kv_blocks=4)  # the default system: the plugin's
    assert h.state.pausing is None
    a = start_a(h, pool, 200, 20)
    b = pool.submit(call, h, "B", 40, 2)
    assert b.result().status_code == 200 and not a.done() and at_engine(h) == ["A", "B"]


def test_a_configured_capacity_wins_over_the_engines(make_harness: MakeHarness,
                                                     pool: ThreadPoolExecutor) -> None:
    h = make_harness(n=1, token_delay=DELAY, system="thunderagent", kv_capacity_tokens=10_000)
    assert h.state.pool.kv_capacity() is None  # this engine reports nothing
    a = start_a(h, pool, 200, 20)
    assert call(h, "B", 40, 2).status_code == 200 and not a.done()  # 10,000 tokens: room for both
