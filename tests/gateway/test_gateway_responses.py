"""The OpenAI Responses API through the gateway (FakeEngines: fake_apis.py, stateless like vLLM without
its store): `previous_response_id` chains behind two engines, GET / DELETE, `store: false`, Codex's
headers, inference over input items, errors in OpenAI's shape, 426 for WebSocket upgrades."""

from __future__ import annotations

import json
from typing import Any

from gateway_harness import Harness, MakeHarness

CODEX = "01a2506f-3705-7031-807d-0e8cb3b09ee0"


def program(h: Harness, pid: str) -> dict[str, Any]:
    return h.client.get(f"/v1/programs/{pid}").json()


def test_a_six_turn_chain_behind_two_engines(make_harness: MakeHarness) -> None:
    """Round robin: consecutive turns land on different engines, none of which keeps any state."""
    harness = make_harness(balancer="round_robin")
    previous = None
    engines, pids = set(), set()
    for turn in range(6):
        body: dict[str, Any] = {"model": "m", "input": f"turn {turn}", "instructions": "Be brief.",
                                "stream": turn % 2 == 1}
        if previous:
            body["previous_response_id"] = previous
        r = harness.client.post("/v1/responses", json=body)
        assert r.status_code == 200, (turn, r.text)
        engines.add(r.headers["x-autellix-engine"])
        pids.add(r.headers["x-autellix-program"])
        if body["stream"]:
            last = [e for e in r.text.split("\n\n") if e][-1]
            assert last.startswith("event: response.completed")
            previous = json.loads(last.split("data: ", 1)[1])["response"]["id"]
        else:
            previous = r.json()["id"]
    assert len(pids) == 1 and len(engines) == 2
    last = harness.requests()[-1]
    assert "previous_response_id" not in last
    texts = [i["content"] for i in last["input"] if i.get("role") == "user"]
    assert texts == [f"turn {t}" for t in range(6)]
    assert sum(i.get("type") == "message" and i.get("role") == "assistant" for i in last["input"]) == 5
    p = program(harness, pids.pop())
    assert (p["source"], p["completed_calls"], p["threads"]) == ("inferred", 6, ["0"])  # its first call


def test_get_delete_store_false_and_404s(harness: Harness) -> None:
    r = harness.client.post("/v1/responses", json={"model": "m", "input": "hi"})
    rid = r.json()["id"]
    got = harness.client.get(f"/v1/responses/{rid}")
    assert got.status_code == 200 and got.json()["id"] == rid
    unstored = harness.client.post("/v1/responses",
                                   json={"model": "m", "input": "hi", "store": False}).json()["id"]
    for missing in (unstored, "resp_nope"):
        r = harness.client.get(f"/v1/responses/{missing}")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = harness.client.post("/v1/responses",
                                json={"model": "m", "input": "x", "previous_response_id": missing})
        assert r.status_code == 404 and r.json()["error"]["param"] == "previous_response_id"
    assert harness.client.delete(f"/v1/responses/{rid}").json() == {"id": rid, "object": "response.deleted",
                                                                    "deleted": True}
    assert harness.client.get(f"/v1/responses/{rid}").status_code == 404
    assert harness.client.delete(f"/v1/responses/{rid}").status_code == 404


def test_input_items_list_the_chain_a_response_was_generated_from(harness: Harness) -> None:
    first = harness.client.post("/v1/responses", json={"model": "m", "input": "one"}).json()["id"]
    second = harness.client.post("/v1/responses", json={
        "model": "m", "previous_response_id": first,
        "input": [{"role": "user", "content": "two"}, {"role": "user", "content": "three"}]}).json()["id"]
    url = f"/v1/responses/{second}/input_items"
    page = harness.client.get(url, params={"order": "asc"}).json()
    texts = [i.get("content") for i in page["data"] if i.get("role") == "user"]
    assert texts == ["one", "two", "three"]  # the first turn, its reply, then this call's own input
    assert [i["role"] for i in page["data"]] == ["user", "assistant", "user", "user"]
    assert page["object"] == "list" and not page["has_more"] and page["first_id"] == page["data"][0]["id"]
    newest = harness.client.get(url, params={"limit": 1}).json()  # default order: newest first
    assert newest["data"][0]["content"] == "three" and newest["has_more"]
    rest = harness.client.get(url, params={"limit": 2, "after": newest["last_id"]}).json()
    assert [i.get("content") for i in rest["data"]][0] == "two" and rest["has_more"]
    first_items = harness.client.get(f"/v1/responses/{first}/input_items").json()["data"]
    assert [i["content"] for i in first_items] == ["one"]  # its own output is not an input
    for params in ({"order": "up"}, {"limit": "0"}, {"limit": "101"}, {"after": "item_nope"}):
        r = harness.client.get(url, params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] == next(iter(params)), params
    assert harness.client.get("/v1/responses/resp_nope/input_items").status_code == 404
    harness.client.delete(f"/v1/responses/{second}")
    assert harness.client.get(url).status_code == 404


def test_responses_are_their_owners_only(make_harness: MakeHarness) -> None:
    h = make_harness(api_keys=frozenset({"a", "b"}))
    rid = h.client.post("/v1/responses", json={"model": "m", "input": "hi"},
                        headers={"authorization": "Bearer a"}).json()["id"]
    assert h.client.get(f"/v1/responses/{rid}", headers={"authorization": "Bearer b"}).status_code == 404
    assert h.client.get(f"/v1/responses/{rid}", headers={"x-api-key": "a"}).status_code == 200


def test_codex_headers_threads_and_subagents(harness: Harness) -> None:
    main = {"session-id": CODEX, "thread-id": CODEX}
    child = {"session-id": CODEX, "thread-id": "child-1", "x-codex-parent-thread-id": CODEX,
             "x-openai-subagent": "collab_spawn"}
    review = {"session_id": CODEX, "x-openai-subagent": "review"}
    for headers in (main, child, review):
        r = harness.client.post("/v1/responses", json={"model": "m", "input": "hi", "store": False,
                                                       "prompt_cache_key": CODEX}, headers=headers)
        assert r.headers["x-autellix-program"] == CODEX
    p = program(harness, CODEX)
    assert (p["source"], p["threads"]) == ("codex", ["0", "child-1", "subagent:review"])
    assert p["thread_parents"] == {"child-1": "0", "subagent:review": "0"}


def test_prompt_cache_key_and_conversation_name_programs(harness: Harness) -> None:
    harness.client.post("/v1/responses", json={"model": "m", "input": "hi", "prompt_cache_key": "pck-1"})
    harness.client.post("/v1/responses", json={"model": "m", "input": "hi", "conversation": {"id": "conv_1"}})
    assert program(harness, "pck-1")["source"] == "prompt_cache_key"
    assert program(harness, "conv_1")["source"] == "conversation"


def test_inferred_full_input_tool_loop_is_one_program(harness: Harness) -> None:
    """The Agents SDK's way (store false, the whole input each turn, output items sent back)."""
    items: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    pids = set()
    for turn in range(3):
        r = harness.client.post("/v1/responses", json={"model": "m", "instructions": "sys", "input": items,
                                                       "store": False, "stream": turn == 2})
        pids.add(r.headers["x-autellix-program"])
        if turn < 2:
            output = r.json()["output"]
            items += [{"type": "reasoning", "id": "rs", "summary": []}, *output,
                      {"type": "function_call_output", "call_id": f"c{turn}", "output": "sunny"}]
    (pid,) = pids
    assert program(harness, pid)["completed_calls"] == 3


def test_bad_input_gets_openai_4xx(harness: Harness) -> None:
    cases = [{"model": "m", "input": 5}, {"model": "m", "input": [5]},
             {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]},
             {"model": "m", "input": "x", "previous_response_id": 7}, {"model": "m"}]
    for body in cases:
        r = harness.client.post("/v1/responses", json=body)
        assert 400 <= r.status_code < 500 and "error" in r.json(), (body, r.text)
        assert isinstance(r.json()["error"]["message"], str)


def test_websocket_upgrade_gets_426(harness: Harness) -> None:
    r = harness.client.get("/v1/responses", headers={"upgrade": "websocket", "connection": "Upgrade",
                                                     "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                                                     "sec-websocket-version": "13"})
    assert r.status_code == 426, r.text
