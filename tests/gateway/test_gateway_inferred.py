"""Programs inferred from the conversation, through the gateway (FakeEngine upstreams)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from gateway_harness import Harness, MakeHarness

from autellix.bench.api_shapes import APIS
from autellix.bench.identity_check import SOURCES, load_sessions, run_check

SYSTEM = {"role": "system", "content": "You are a helpful agent."}


def ask(h: Harness, messages: list[dict], stream: bool = False, **headers: str) -> tuple[str, dict]:
    """One call; returns the program the gateway named and the assistant message a client would keep."""
    r = h.client.post("/v1/chat/completions", headers=headers,
                      json={"model": "m", "messages": messages, "max_tokens": 3, "stream": stream})
    assert r.status_code == 200, r.text
    if not stream:
        return r.headers["x-autellix-program"], r.json()["choices"][0]["message"]
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                   for line in r.text.splitlines() if line.startswith("data: {") and '"delta"' in line)
    return r.headers["x-autellix-program"], {"role": "assistant", "content": text}


def test_an_unmodified_multi_turn_loop_is_one_program(harness: Harness) -> None:
    history = [SYSTEM, {"role": "user", "content": "list files"}]
    programs = set()
    for k, stream in enumerate((False, True, False, True)):
        program, reply = ask(harness, history, stream=stream)
        programs.add(program)
        history += [reply, {"role": "user", "content": f"observation {k}"}]
    assert len(programs) == 1
    (program,) = programs
    entry = harness.client.get(f"/v1/programs/{program}").json()
    assert (entry["source"], entry["completed_calls"], entry["threads"]) == ("inferred", 4, ["0"])
    assert all(r["vllm_xargs"]["autellix_program"] == program for r in harness.requests())
    listed = harness.client.get("/v1/programs").json()["data"]
    assert [p["id"] for p in listed] == [program]


def test_concurrent_runs_with_one_system_prompt_are_separate_programs(harness: Harness) -> None:
    def run(task: str) -> set[str]:
        history, seen = [SYSTEM, {"role": "user", "content": task}], set()
        for k in range(3):
            program, reply = ask(harness, history)
            seen.add(program)
            history += [reply, {"role": "user", "content": f"{task}: result {k}"}]
        return seen

    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(run, [f"task {i}" for i in range(4)]))
    assert all(len(r) == 1 for r in runs) and len(set.union(*runs)) == 4


def test_parallel_branches_are_threads_of_one_program(harness: Harness) -> None:
    program, reply = ask(harness, [SYSTEM, {"role": "user", "content": "expand"}])
    base = [SYSTEM, {"role": "user", "content": "expand"}, reply]
    with ThreadPoolExecutor(3) as pool:
        names = set(pool.map(lambda k: ask(harness, [*base, {"role": "user", "content": f"child {k}"}])[0],
                             range(3)))
    assert names == {program}
    assert harness.client.get(f"/v1/programs/{program}").json()["threads"] == ["0", "0.1", "0.2"]


def test_text_completions_follow_the_prompt(harness: Harness) -> None:
    r1 = harness.client.post("/v1/completions", json={"prompt": "Q: plan?\nA:", "max_tokens": 2})
    prompt = "Q: plan?\nA:" + r1.json()["choices"][0]["text"] + "\nQ: next?\nA:"
    r2 = harness.client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})
    assert r1.headers["x-autellix-program"] == r2.headers["x-autellix-program"]
    batch = harness.client.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2})
    assert batch.status_code == 200 and "x-autellix-program" not in batch.headers  # cannot be matched


def test_named_programs_win_and_inference_can_be_turned_off(make_harness: MakeHarness) -> None:
    h = make_harness()
    program, reply = ask(h, [SYSTEM, {"role": "user", "content": "hi"}], **{"X-Program-ID": "mine"})
    assert program == "mine" and len(h.state.conversations) == 0  # named calls are not indexed
    off = make_harness(infer_programs=False)
    r = off.client.post("/v1/chat/completions", json={"model": "m", "messages": [SYSTEM], "max_tokens": 1})
    assert "x-autellix-program" not in r.headers and off.state.conversations is None


def test_bad_input_gets_clear_4xx(make_harness: MakeHarness) -> None:
    h = make_harness(max_body_bytes=4096)
    for messages, where in (("hello", "messages"), ([{"role": "user", "content": 7}], "messages[0].content"),
                            ([{"content": "no role"}], "messages[0].role")):
        r = h.client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
        assert r.status_code == 400 and where in r.json()["error"]["message"], r.text
    huge = [{"role": "user", "content": "x" * 5000}]
    r = h.client.post("/v1/chat/completions", json={"model": "m", "messages": huge})
    assert r.status_code == 413 and "--max-body-mb" in r.json()["error"]["message"]
    r = h.client.post("/v1/chat/completions", json={"model": "m", "messages": [SYSTEM], "program_id": 5})
    assert r.status_code == 400 and "program_id" in r.text
    r = h.client.post("/v1/chat/completions", json={"model": "m", "messages": [SYSTEM], "thread_id": {}})
    assert r.status_code == 400 and "thread_id" in r.text
    assert h.requests() == []  # nothing malformed reached an engine


def test_real_agent_sessions_replayed_interleaved_are_attributed_right() -> None:
    """Ground truth: the mini-swe-agent and tau-bench sessions (scripts/infer_programs_check.py)."""
    sessions = load_sessions()
    assert len(sessions) >= 30 and sum(len(s.calls) for s in sessions) >= 600
    result = run_check(sessions, seed=7)
    assert result.share >= 0.99 and result.merged_programs == 0, result


@pytest.mark.parametrize("api", APIS)
def test_a_slice_of_the_sessions_replayed_over_each_api_is_attributed_right(api: str) -> None:
    """The same ground truth in each API's own request shape (Messages: top-level system, content
    blocks, tool_use / tool_result; Responses: instructions, input items, function_call /
    function_call_output, store false, the whole input each turn): a quarter of the sessions, both
    agents, tool calls and the simulated user's hand-offs included."""
    sessions = load_sessions()[::4]
    assert {s.session_id.split(":")[0] for s in sessions} == set(SOURCES)
    assert sum(bool(c.reply.get("tool_calls")) for s in sessions for c in s.calls) >= 30
    result = run_check(sessions, seed=3, api=api)
    assert result.share >= 0.99 and result.merged_programs == 0, result
