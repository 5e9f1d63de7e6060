"""API keys: 401 without a valid key, and programs isolated between keys."""

from __future__ import annotations

import pytest
from gateway_harness import Harness, MakeHarness, chat

A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}


@pytest.fixture
def keyed(make_harness: MakeHarness) -> Harness:
    return make_harness(api_keys=frozenset({"key-a", "key-b"}))


def test_missing_or_wrong_key_is_401(keyed: Harness) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic key-a"}):
        for method, path in (("POST", "/v1/chat/completions"), ("POST", "/v1/programs"),
                             ("GET", "/v1/models"), ("GET", "/v1/programs/x")):
            r = keyed.client.request(method, path, json=chat(), headers=headers)
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"]["type"] == "authentication_error"
    assert keyed.requests() == []


def test_health_and_metrics_need_no_key(keyed: Harness) -> None:
    assert keyed.client.get("/health").status_code == 200
    assert keyed.client.get("/metrics").status_code == 200


def test_programs_are_isolated_between_keys(keyed: Harness) -> None:
    pid = keyed.client.post("/v1/programs", headers=A).json()["id"]
    assert keyed.client.get(f"/v1/programs/{pid}", headers=B).status_code == 404
    assert keyed.client.delete(f"/v1/programs/{pid}", headers=B).status_code == 404
    tagged = keyed.client.post("/v1/chat/completions", json=chat(), headers={**B, "X-Program-ID": pid})
    assert tagged.status_code == 404
    assert keyed.client.post("/v1/programs", json={"program_id": pid}, headers=B).status_code == 409
    ok = keyed.client.post("/v1/chat/completions", json=chat(), headers={**A, "X-Program-ID": pid})
    assert ok.status_code == 200
    assert keyed.client.get(f"/v1/programs/{pid}", headers=A).json()["completed_calls"] == 1
    assert [p["id"] for p in keyed.client.get("/v1/programs", headers=A).json()["data"]] == [pid]
    assert keyed.client.get("/v1/programs", headers=B).json()["data"] == []  # each key sees its own
    assert keyed.client.get("/v1/programs").status_code == 401
    assert keyed.client.delete(f"/v1/programs/{pid}", headers=A).status_code == 200


def test_gateway_key_is_not_forwarded(keyed: Harness) -> None:
    keyed.client.post("/v1/chat/completions", json=chat(),
                      headers={**A, "X-Program-ID": "p", "X-Request-ID": "r1"})
    sent = [h for f in keyed.fakes for h in f.headers][-1]
    assert "authorization" not in sent and "x-program-id" not in sent
    assert sent["x-request-id"] == "r1"  # other headers pass through
