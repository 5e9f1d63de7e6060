"""The Anthropic Messages API through the gateway (FakeEngines: fake_apis.py): identity from Claude
Code's headers and metadata, subagents as threads with their parent, conversation inference over
content blocks (billing block ignored), usage, streaming, errors in Anthropic's shape, x-api-key."""

from __future__ import annotations

import json
from typing import Any

from gateway_harness import Harness, MakeHarness

from autellix.context import XARG_PROGRAM, XARG_THREAD

SESSION = "2ac69ac2-18b3-4d88-8bdd-e07c950122ee"


def call(messages: list[Any], system: Any = None, **extra: Any) -> dict[str, Any]:
    body = {"model": "claude-opus-4-5", "max_tokens": 5, "messages": messages, **extra}
    if system is not None:
        body["system"] = system
    return body


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def program(h: Harness, pid: str) -> dict[str, Any]:
    return h.client.get(f"/v1/programs/{pid}").json()


def test_claude_code_headers_make_one_program_with_subagent_threads(harness: Harness) -> None:
    main = {"x-claude-code-session-id": SESSION}
    sub = {**main, "x-claude-code-agent-id": "a1"}
    subsub = {**main, "x-claude-code-agent-id": "a2", "x-claude-code-parent-agent-id": "a1"}
    for headers in (main, sub, subsub, main):
        r = harness.client.post("/v1/messages?beta=true", json=call([user("hi")]), headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-autellix-program"] == SESSION
    p = program(harness, SESSION)
    assert (p["source"], p["completed_calls"], p["threads"]) == ("claude-code", 4, ["0", "a1", "a2"])
    assert p["thread_parents"] == {"a1": "0", "a2": "a1"}
    sent = harness.requests()
    assert {(r["vllm_xargs"][XARG_PROGRAM], r["vllm_xargs"][XARG_THREAD]) for r in sent} == {
        (SESSION, "0"), (SESSION, "a1"), (SESSION, "a2")}


def test_metadata_user_id_names_the_session(harness: Harness) -> None:
    for user_id in (json.dumps({"device_id": "d", "account_uuid": "", "session_id": "s-json"}),
                    "user_abc_account_0f_session_s-legacy"):
        r = harness.client.post("/v1/messages", json=call([user("hi")], metadata={"user_id": user_id}))
        assert r.status_code == 200
    assert program(harness, "s-json")["source"] == "claude-code"
    assert program(harness, "s-legacy")["completed_calls"] == 1


def test_inferred_conversation_over_blocks_with_a_changing_billing_block(harness: Harness) -> None:
    """A tool loop without ids: one program, though the billing block changes every call."""

    def system(n: int) -> list[dict[str, Any]]:
        return [{"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.{n}; cch={n};"},
                {"type": "text", "text": "You are a helpful agent.", "cache_control": {"type": "ephemeral"}}]

    history = [user("List the files.")]
    pids = set()
    for turn in range(3):
        r = harness.client.post("/v1/messages", json=call(history, system(turn), stream=turn == 1))
        assert r.status_code == 200
        pids.add(r.headers["x-autellix-program"])
        if turn == 1:
            events = [e for e in r.text.split("\n\n") if e]
            assert events[0].startswith("event: message_start")
            assert events[-1].startswith("event: message_stop")
            text = "tok " * 5
        else:
            text = r.json()["content"][0]["text"]
        reply: Any = [{"type": "thinking", "thinking": "hm", "signature": "s"},
                      {"type": "text", "text": text}]
        history += [{"role": "assistant", "content": reply if turn != 1 else text},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"tu{turn}",
                                                  "content": [{"type": "text", "text": "a.txt"}]}]}]
    assert len(pids) == 1
    p = program(harness, pids.pop())
    assert (p["source"], p["completed_calls"]) == ("inferred", 3)


def test_usage_is_charged_from_anthropic_usage(harness: Harness) -> None:
    headers = {"x-claude-code-session-id": "u1"}
    harness.client.post("/v1/messages", json=call([user("x" * 400)]), headers=headers)
    harness.client.post("/v1/messages", json=call([user("x" * 400)], stream=True), headers=headers)
    p = program(harness, "u1")
    assert p["completed_calls"] == 2 and p["service"] > 0


def test_errors_are_in_anthropic_shape(make_harness: MakeHarness) -> None:
    h = make_harness(api_keys=frozenset({"k1"}))
    r = h.client.post("/v1/messages", json=call([user("hi")]))
    assert r.status_code == 401 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "authentication_error"
    ok = {"x-api-key": "k1"}
    assert h.client.post("/v1/messages", json=call([user("hi")]), headers=ok).status_code == 200
    bad = h.client.post("/v1/messages", json=call([user("hi")]), headers={"x-api-key": "bad"})
    assert bad.status_code == 401
    cases = {
        "malformed block": call([{"role": "user", "content": [{"text": "no type"}]}]),
        "block not an object": call([{"role": "user", "content": ["text"]}]),
        "text not a string": call([{"role": "user", "content": [{"type": "text", "text": 3}]}]),
        "messages not a list": call("hi"),  # type: ignore[arg-type]
        "no role": call([{"content": "hi"}]),
        "system wrong type": call([user("hi")], system=5),
        "engine validation": {"messages": [user("hi")]},  # no model, no max_tokens: the engine's 400
    }
    for name, body in cases.items():
        r = h.client.post("/v1/messages", json=body, headers=ok)
        assert r.status_code == 400, (name, r.text)
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error", name
    r = h.client.post("/v1/messages", content=b"{not json", headers=ok)
    assert r.status_code == 400 and r.json()["type"] == "error"
    h.state.proxy.max_body_bytes = 1000
    r = h.client.post("/v1/messages", json=call([user("x" * 2000)]), headers=ok)
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_count_tokens_is_no_call_and_models_are_aliased(make_harness: MakeHarness) -> None:
    h = make_harness(model_aliases=(("claude-*", "served"),))
    r = h.client.post("/v1/messages/count_tokens",
                      json={"model": "claude-haiku-4-5", "messages": [user("hi")]})
    assert r.status_code == 200 and r.json()["input_tokens"] >= 0
    h.client.post("/v1/messages", json=call([user("hi")]), headers={"x-claude-code-session-id": "al"})
    assert [r["model"] for r in h.requests()] == ["served"]
    assert program(h, "al")["completed_calls"] == 1
    assert h.client.get("/v1/programs").json()["data"][0]["id"] == "al"
