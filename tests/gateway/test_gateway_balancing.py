"""Balancers through the gateway: locality pins long programs, short calls go to the least used."""

from __future__ import annotations

import threading
from typing import Any

from gateway_harness import Harness, MakeHarness, chat


def engine_of(h: Harness, **kw: Any) -> str:
    return h.client.post("/v1/completions", **kw).headers["x-autellix-engine"]


def test_locality_pins_long_calls_of_a_program(make_harness: MakeHarness) -> None:
    h: Harness = make_harness(long_prompt=50, token_delay=0.02)
    long_body = {"prompt": "word " * 200, "max_tokens": 2}
    first = engine_of(h, json=long_body, headers={"X-Program-ID": "agent"})
    assert h.client.get("/v1/programs/agent").json()["engine"] == first
    # Keep the pinned engine busy: short calls from elsewhere now prefer the other engine,
    # but the long program's calls stay where its KV cache is.
    busy = threading.Thread(target=lambda: h.client.post(
        "/v1/completions", json={"prompt": "x", "max_tokens": 40}, headers={"X-Program-ID": "agent",
                                                                             "X-Thread-ID": "bg"}))
    busy.start()
    try:
        import time
        deadline = time.monotonic() + 5
        while sum(e.load.active for e in h.state.pool.upstreams) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy_engine = next(e.name for e in h.state.pool.upstreams if e.load.active)
        other = "engine-1" if busy_engine == "engine-0" else "engine-0"
        assert engine_of(h, json={"prompt": "short", "max_tokens": 1}) == other
        assert all(engine_of(h, json=long_body, headers={"X-Program-ID": "agent"}) == first
                   for _ in range(3))
    finally:
        busy.join()


def test_round_robin_alternates(make_harness: MakeHarness) -> None:
    h: Harness = make_harness(balancer="round_robin")
    seen = [h.client.post("/v1/chat/completions", json=chat()).headers["x-autellix-engine"]
            for _ in range(4)]
    assert seen == ["engine-0", "engine-1", "engine-0", "engine-1"]


def test_least_used_prefers_idle_engine(make_harness: MakeHarness) -> None:
    h: Harness = make_harness(balancer="least_used")
    h.state.pool.upstreams[0].load.active += 5  # pretend engine-0 is busy
    try:
        assert h.client.post("/v1/chat/completions", json=chat()).headers["x-autellix-engine"] == "engine-1"
    finally:
        h.state.pool.upstreams[0].load.active -= 5
