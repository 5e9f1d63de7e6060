"""The replay against the FAKE upstream: lengths sent, dependency order, parallel threads, identity."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fake_openai import ServeFake  # tests/bench/ is on sys.path (conftest.py)

from autellix.bench.driver import ReplayOptions, RunResult, clip_call, replay
from autellix.bench.prompts import PromptBuilder
from autellix.bench.targets import Target
from autellix.workloads import generate
from autellix.workloads.spec import CallSpec, ProgramSpec


def _run(url: str, programs: list[ProgramSpec], builder: PromptBuilder, rate: float = 1.0,
         **opts: object) -> RunResult:
    async def go() -> RunResult:
        async with httpx.AsyncClient() as client:
            options = ReplayOptions(model="fake-model", run_tag="t0", **opts)  # type: ignore[arg-type]
            return await replay(client, Target("fake", url), programs, rate, builder, options)
    return asyncio.run(go())


def _tree(arrival: float = 0.0) -> ProgramSpec:
    """A root, three parallel branches extending it, and a join: threads 0-2."""
    calls = (
        CallSpec(200, 10, thread=0, prompt_text="Plan a trip to the mountains."),
        CallSpec(400, 30, thread=0, depends_on=(0,), prefix_call=0),
        CallSpec(500, 30, thread=1, depends_on=(0,), prefix_call=0, tool_pause=0.05),
        CallSpec(300, 30, thread=2, depends_on=(0,), prefix_call=0),
        CallSpec(900, 5, thread=0, depends_on=(1, 2, 3), prefix_call=1),
    )
    return ProgramSpec("tree-0", "tree", arrival, calls)


def test_sends_intended_prompt_and_output_lengths(serve_fake: ServeFake, builder: PromptBuilder) -> None:
    fake, url = serve_fake()
    programs = generate("chat", 6, 50.0, seed=3, scale=0.1) + generate("react", 3, 50.0, seed=3, scale=0.5)
    result = _run(url, programs, builder, rate=50.0)
    assert not result.aborted and all(p.ok for p in result.programs)
    n_calls = sum(p.num_calls for p in programs)
    assert len(fake.requests) == len(result.calls) == n_calls
    intended = {(p.program_id, i): c for p in programs for i, c in enumerate(p.calls)}
    for rec in result.calls:
        c = intended[(rec.program, rec.call)]
        assert abs(rec.engine_prompt_tokens - c.prompt_tokens) <= max(2, 0.05 * c.prompt_tokens), rec
        assert rec.completion_tokens == c.output_tokens
    for seen in fake.requests:
        assert seen.body["ignore_eos"] is True and seen.body["stream"] is True
    total_sent = sum(s.prompt_tokens for s in fake.requests)
    total_want = sum(c.prompt_tokens for c in intended.values())
    assert abs(total_sent - total_want) <= 0.01 * total_want


def test_history_is_a_prefix_and_identity_is_sent(serve_fake: ServeFake, builder: PromptBuilder) -> None:
    fake, url = serve_fake()
    result = _run(url, [_tree()], builder)
    assert all(p.ok for p in result.programs)
    bodies = {r.body["prompt"][:40]: r for r in fake.requests}
    assert len(bodies) == 1  # every call extends the root's prompt
    by_tokens = sorted(fake.requests, key=lambda s: s.start)
    root = by_tokens[0]
    for seen in by_tokens[1:]:
        assert seen.body["prompt"].startswith(root.body["prompt"])
        xargs = seen.body["vllm_xargs"]
        assert xargs["autellix_program"] == "t0:tree-0" == seen.headers["x-program-id"]
        assert xargs["autellix_thread"] == seen.headers["x-thread-id"]
    assert {s.headers["x-thread-id"] for s in fake.requests} == {"0", "1", "2"}


def test_threads_run_in_parallel_and_dependencies_in_order(
        serve_fake: ServeFake, builder: PromptBuilder) -> None:
    fake, url = serve_fake(decode_step=0.01)
    _run(url, [_tree()], builder)
    seen = {s.prompt_tokens: s for s in fake.requests}
    root, b0, b1, b2, join = (seen[n] for n in (200, 400, 500, 300, 900))
    for branch in (b0, b1, b2):
        assert branch.start >= root.end  # dependency order
        assert join.start >= branch.end
    # The three branches (30 tokens x 10 ms each) overlap in time: parallel, not one after another.
    assert max(b.start for b in (b0, b1, b2)) < min(b.end for b in (b0, b1, b2))
    assert b1.start - root.end >= 0.05  # the tool pause before branch 1


def test_program_latency_is_jct_per_output_token(serve_fake: ServeFake, builder: PromptBuilder) -> None:
    _, url = serve_fake(decode_step=0.005)
    result = _run(url, [_tree(arrival=0.1)], builder)
    (p,) = result.programs
    assert p.output_tokens == 105 and p.threads == 3
    last = max(c.issued + c.latency for c in result.calls)
    assert p.jct == pytest.approx(last - 0.1)
    assert p.latency == pytest.approx(p.jct / 105)
    assert all(c.ttft is not None and 0 <= c.ttft <= c.latency for c in result.calls)


def test_clip_keeps_calls_inside_the_context() -> None:
    assert clip_call(100, 50, None) == (100, 50, False)
    assert clip_call(100, 50, 2048) == (100, 50, False)
    prompt, out, clipped = clip_call(5000, 300, 2048)
    assert clipped and prompt + out <= 2048 - 8 and out == 300


def test_clipped_calls_fit_the_fake_context(serve_fake: ServeFake, builder: PromptBuilder) -> None:
    fake, url = serve_fake(max_model_len=512)
    programs = generate("chat", 3, 50.0, seed=1, scale=0.5)
    result = _run(url, programs, builder, rate=50.0, max_model_len=512)
    assert all(p.ok for p in result.programs)
    assert any(c.clipped for c in result.calls)
    assert all(s.prompt_tokens + int(s.body["max_tokens"]) <= 512 for s in fake.requests)
