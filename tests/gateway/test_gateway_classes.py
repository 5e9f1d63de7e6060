"""Classes through the gateway (FakeEngines): the class a call names reaches the engine as
`autellix_class` and the gateway's table as the program's class; `priority` never reaches an engine;
a bad class is a 400 in the route's API shape, and no engine sees the call."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_harness import Harness, MakeHarness, chat

from autellix.context import XARG_CLASS

CHAT, MESSAGES, RESPONSES = "/v1/chat/completions", "/v1/messages", "/v1/responses"
BODIES: dict[str, dict[str, Any]] = {
    CHAT: chat(),
    MESSAGES: {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    RESPONSES: {"model": "m", "input": "hi"},
}


def post(h: Harness, path: str, pid: str | None = "p", headers: dict[str, str] | None = None,
         **extra: Any) -> Any:
    named = {"x-program-id": pid} if pid is not None else {}
    return h.client.post(path, json={**BODIES[path], **extra}, headers={**named, **(headers or {})})


@pytest.fixture
def harness(make_harness: MakeHarness) -> Harness:
    """One engine (its requests in order), no inference (a call naming no program is anonymous)."""
    return make_harness(n=1, infer_programs=False)


def last_xargs(h: Harness) -> dict[str, Any]:
    return h.requests()[-1].get("vllm_xargs", {})


def program_class(h: Harness, pid: str = "p") -> str:
    return h.client.get(f"/v1/programs/{pid}").json()["class"]


@pytest.mark.parametrize("path", [CHAT, MESSAGES, RESPONSES])
def test_marked_call_reaches_engine_as_context_without_priority(harness: Harness, path: str) -> None:
    r = post(harness, path, priority=3, nvext={"agent_hints": {"osl": 10}})
    assert r.status_code == 200, r.text
    sent = harness.requests()[-1]
    assert "priority" not in sent and sent["nvext"] == {"agent_hints": {"osl": 10}}
    assert sent["vllm_xargs"][XARG_CLASS] == "batch"
    assert program_class(harness) == "batch"
    post(harness, path, priority=0)
    assert "priority" not in harness.requests()[-1]
    assert last_xargs(harness)[XARG_CLASS] == "interactive" and program_class(harness) == "interactive"


def test_unmarked_calls_keep_the_programs_class_and_carry_batch_on(harness: Harness) -> None:
    assert post(harness, CHAT).status_code == 200
    assert XARG_CLASS not in last_xargs(harness) and program_class(harness) == "interactive"
    post(harness, CHAT, headers={"x-autellix-class": "Batch"})
    assert last_xargs(harness)[XARG_CLASS] == "batch"
    post(harness, CHAT)  # names none: stays batch, and says so (an engine may not have seen the mark)
    assert last_xargs(harness)[XARG_CLASS] == "batch" and program_class(harness) == "batch"
    listed = harness.client.get("/v1/programs").json()["data"]
    assert [(p["id"], p["class"]) for p in listed] == [("p", "batch")]


def test_dynamo_hint_and_anonymous_calls(harness: Harness) -> None:
    post(harness, CHAT, nvext={"agent_hints": {"priority": -1}}, priority=-4)
    assert last_xargs(harness)[XARG_CLASS] == "batch" and program_class(harness) == "batch"
    assert post(harness, CHAT, pid=None, priority=2).status_code == 200  # anonymous: no context at all
    sent = harness.requests()[-1]
    assert "vllm_xargs" not in sent and "priority" not in sent


BAD: list[tuple[dict[str, str], dict[str, Any], str]] = [
    ({"x-autellix-class": "urgent"}, {}, "x-autellix-class"),
    ({}, {"priority": 1.0}, "priority"),
    ({}, {"priority": True}, "priority"),
    ({}, {"nvext": []}, "nvext"),
    ({}, {"nvext": {"agent_hints": "x"}}, "nvext.agent_hints"),
    ({}, {"nvext": {"agent_hints": {"priority": "low"}}}, "nvext.agent_hints.priority"),
]


@pytest.mark.parametrize("headers, extra, field", BAD)
def test_bad_class_is_400_in_each_apis_shape(harness: Harness, headers: dict[str, str],
                                             extra: dict[str, Any], field: str) -> None:
    for path in (CHAT, RESPONSES):
        r = post(harness, path, headers=headers, **extra)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == field
        assert error["message"].startswith(f"{field}: must be"), error
    r = post(harness, MESSAGES, headers=headers, **extra)
    assert r.status_code == 400 and r.json()["type"] == "error", r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(f"{field}: must be")
    assert harness.requests() == []  # refused before any engine, and before the program was opened
    assert harness.client.get("/v1/programs").json()["data"] == []


@pytest.mark.parametrize("system, forwarded", [("vllm", True), ("autellix", False)])
def test_stock_engines_get_a_batch_programs_class_as_vllm_priority(make_harness: MakeHarness, system: str,
                                                                    forwarded: bool) -> None:
    """Stock vLLM (no plugin) reads no program context: the class reaches it as `priority` 1 (lower is
    served first), on every call of a batch program; interactive calls send none."""
    h = make_harness(n=1, infer_programs=False, system=system)
    post(h, CHAT, headers={"x-autellix-class": "batch"})
    post(h, CHAT)  # unmarked: the program is still batch
    post(h, CHAT, pid="q", priority=-2)  # interactive, and the client's own priority never passes
    sent = [r.get("priority") for r in h.requests()]
    assert sent == ([1, 1, None] if forwarded else [None, None, None])
