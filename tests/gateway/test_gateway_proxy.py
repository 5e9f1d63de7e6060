"""Forwarding through the gateway to FakeEngines: program context, usage accounting, streams, errors."""

from __future__ import annotations

import json

from gateway_harness import Harness, MakeHarness, chat


def sse_events(raw: bytes) -> list[str]:
    return [e.removeprefix("data: ") for e in raw.decode().split("\n\n") if e]


def test_vllm_xargs_added_and_identity_fields_stripped(harness: Harness) -> None:
    pid = harness.client.post("/v1/programs").json()["id"]
    body = chat(program_id=pid, thread_id="t7", vllm_xargs={"mine": "kept"}, temperature=0.3,
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    r = harness.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-autellix-program"] == pid
    sent = harness.requests()[-1]
    assert "program_id" not in sent and "thread_id" not in sent
    assert sent["temperature"] == 0.3 and sent["tools"] == body["tools"]  # the rest passes through
    assert sent["vllm_xargs"] == {"mine": "kept", "autellix_program": pid, "autellix_thread": "t7",
                                  "autellix_service": 0.0, "autellix_wait": 0.0}


def test_service_snapshot_grows_with_usage(make_harness: MakeHarness) -> None:
    h = make_harness(cached=8)
    headers = {"X-Program-ID": "p1"}
    for _ in range(2):
        r = h.client.post("/v1/completions", json={"prompt": "x" * 160, "max_tokens": 10}, headers=headers)
        assert r.status_code == 200
    # each call: 10 decode + 0.25 * (40 prompt - 8 cached) = 18
    assert h.requests()[-1]["vllm_xargs"]["autellix_service"] == 18
    info = h.client.get("/v1/programs/p1").json()
    assert info["service"] == 36 and info["completed_calls"] == 2 and info["active_calls"] == []


def test_session_header_and_anonymous_calls(make_harness: MakeHarness) -> None:
    harness = make_harness(infer_programs=False)
    harness.client.post("/v1/chat/completions", json=chat(), headers={"X-Session-ID": "sess"})
    assert harness.requests()[-1]["vllm_xargs"]["autellix_program"] == "sess"
    assert harness.client.get("/v1/programs/sess").status_code == 200
    r = harness.client.post("/v1/chat/completions", json=chat())
    assert "x-autellix-program" not in r.headers
    assert "vllm_xargs" not in harness.requests()[-1]  # anonymous: the engine runs it as a one-call program
    assert len(harness.state.sessions) == 1  # the anonymous program is gone


def test_stream_usage_requested_then_stripped(harness: Harness) -> None:
    r = harness.client.post("/v1/chat/completions", json=chat(stream=True, max_tokens=4),
                            headers={"X-Program-ID": "s"})
    events = sse_events(r.content)
    assert events[-1] == "[DONE]" and len(events) == 5
    assert all("usage" not in json.loads(e) for e in events[:-1])
    assert harness.requests()[-1]["stream_options"] == {"include_usage": True}
    assert harness.client.get("/v1/programs/s").json()["service"] == 4 + 0.25 * (len("hello") // 4)


def test_stream_is_charged_before_the_client_sees_done(make_harness: MakeHarness) -> None:
    # The engine keeps its connection open after [DONE]: a client that has read [DONE] (the OpenAI SDK
    # stops there) and asks about its program at once, stream still open, sees the call completed.
    h = make_harness(linger=3.0)
    with h.client.stream("POST", "/v1/chat/completions", json=chat(stream=True, max_tokens=4),
                         headers={"X-Program-ID": "d"}) as r:
        lines = r.iter_lines()  # kept open: leaving a `for` over it would close the stream
        while next(lines) != "data: [DONE]":
            pass
        info = h.client.get("/v1/programs/d").json()
    assert info["completed_calls"] == 1 and info["active_calls"] == []
    assert info["service"] == 4 + 0.25 * (len("hello") // 4)


def test_stream_usage_kept_when_client_asked(harness: Harness) -> None:
    body = chat(stream=True, max_tokens=3, stream_options={"include_usage": True})
    events = sse_events(harness.client.post("/v1/chat/completions", json=body).content)
    last = json.loads(events[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3


def test_malformed_json_is_400(harness: Harness) -> None:
    for content in (b"{not json", b"[1, 2]", b""):
        r = harness.client.post("/v1/chat/completions", content=content)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert harness.requests() == []


def test_unknown_program_is_404(harness: Harness) -> None:
    assert harness.client.get("/v1/programs/nope").status_code == 404
    assert harness.client.delete("/v1/programs/nope").status_code == 404


def test_engine_4xx_passes_through(harness: Harness) -> None:
    r = harness.client.post("/v1/completions", json={"prompt": "OVERSIZED " * 10},
                            headers={"X-Program-ID": "big"})
    assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
    info = harness.client.get("/v1/programs/big").json()
    assert info["service"] == 0 and info["active_calls"] == []


def test_session_lifecycle(harness: Harness) -> None:
    created = harness.client.post("/v1/programs", json={"program_id": "mine"})
    assert created.status_code == 201 and created.json()["id"] == "mine"
    harness.client.post("/v1/chat/completions", json=chat(), headers={"X-Program-ID": "mine"})
    assert harness.client.get("/v1/programs/mine").json()["completed_calls"] == 1
    ended = harness.client.delete("/v1/programs/mine")
    assert ended.status_code == 200 and ended.json()["deleted"] is True
    assert harness.client.get("/v1/programs/mine").status_code == 404


def test_programs_expire_after_ttl(make_harness: MakeHarness) -> None:
    import time

    from autellix.policy.config import PolicyConfig

    h = make_harness(policy=PolicyConfig(table_ttl=0.3))
    pid = h.client.post("/v1/programs").json()["id"]
    time.sleep(0.8)
    assert h.client.get(f"/v1/programs/{pid}").status_code == 404
    assert len(h.state.sessions) == 0


def test_models_and_other_routes_pass_through(harness: Harness) -> None:
    assert harness.client.get("/v1/models").json()["data"][0]["id"] == "fake-model"
    r = harness.client.post("/tokenize?add_special_tokens=false", json={"prompt": "abcdefgh"})
    assert r.json()["count"] == 2 and r.json()["query"] == "add_special_tokens=false"


def test_health(harness: Harness) -> None:
    r = harness.client.get("/health")
    assert r.status_code == 200 and r.json()["healthy"] == 2


def test_program_end_reaches_every_engine_within_a_second(make_harness: MakeHarness) -> None:
    """DELETE (and the table TTL) send each healthy engine a program-end notice: a one-token completion
    carrying autellix_end, which the plugin turns into releasing the program's KV holds."""
    import time

    from autellix.policy import PolicyConfig

    h = make_harness(n=2, policy=PolicyConfig(table_ttl=0.3))
    pid = h.client.post("/v1/programs").json()["id"]
    first = h.client.post("/v1/chat/completions", json=chat(), headers={"X-Program-ID": pid})
    assert first.status_code == 200

    def notices(program: str) -> list[dict]:
        return [r for f in h.fakes for r in f.requests if r.get("vllm_xargs", {}).get("autellix_end")
                and r["vllm_xargs"]["autellix_program"] == program]

    assert h.client.delete(f"/v1/programs/{pid}").status_code == 200
    deadline = time.monotonic() + 1.0
    while len(notices(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    sent = notices(pid)
    assert len(sent) == 2 and {r["max_tokens"] for r in sent} == {1} and all(r["model"] for r in sent)
    idle = h.client.post("/v1/programs").json()["id"]  # never ends itself: the TTL does it
    deadline = time.monotonic() + 5.0
    while len(notices(idle)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(notices(idle)) == 2
    before = len(h.requests())
    h.client.post("/v1/chat/completions", json=chat())  # an anonymous call ends with no notice
    time.sleep(0.3)
    assert len(h.requests()) == before + 1


def test_programs_are_listed_with_their_source_paged_and_per_owner(make_harness: MakeHarness) -> None:
    harness = make_harness(infer_programs=False)
    c = harness.client
    c.post("/v1/programs", json={"program_id": "a-created"})
    c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers={"X-Program-ID": "b-header"})
    c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "program_id": "c-body"})
    c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers={"X-Session-ID": "d-session"})
    c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2},
           headers={"X-Claude-Code-Session-Id": "e-claude"})  # an unmodified harness's own header
    c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})  # anonymous: never listed
    page = c.get("/v1/programs", params={"limit": 3}).json()
    assert [p["id"] for p in page["data"]] == ["a-created", "b-header", "c-body"] and page["has_more"]
    assert [p["source"] for p in page["data"]] == ["created", "header", "body"]
    rest = c.get("/v1/programs", params={"after": page["last_id"]}).json()
    assert [(p["id"], p["source"]) for p in rest["data"]] == [("d-session", "session"),
                                                               ("e-claude", "claude-code")]
    assert not rest["has_more"]
    assert any(r.get("vllm_xargs", {}).get("autellix_program") == "e-claude" for r in harness.requests())
    assert c.delete("/v1/programs/b-header").json()["source"] == "header"
    assert "b-header" not in [p["id"] for p in c.get("/v1/programs").json()["data"]]
    assert c.get("/v1/programs", params={"limit": 0}).status_code == 400
    r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers={"X-Program-ID": ""})
    assert r.status_code == 400 and "X-Program-ID" in r.text
