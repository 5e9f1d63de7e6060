"""GET /metrics: engine load and health, calls by level, preemptions, program latency."""

from __future__ import annotations

import time

from gateway_harness import Harness, chat


def metric(text: str, name: str) -> float | None:
    """Value of an unlabelled sample."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == name:
            return float(value)
    return None


def test_metrics_exposition(harness: Harness) -> None:
    for _ in range(3):
        harness.client.post("/v1/chat/completions", json=chat("", max_tokens=100),
                                headers={"X-Program-ID": "p"})
    harness.client.delete("/v1/programs/p")
    harness.client.post("/v1/completions", json={"prompt": "OVERSIZED"})
    time.sleep(0.5)  # one health round scrapes the engines' preemption counters
    text = harness.client.get("/metrics").text
    assert 'autellix_engine_healthy{engine="engine-0",url="' in text
    assert 'autellix_engine_active_calls{engine="engine-0"} 0.0' in text
    # 3 calls: the third starts at service 200 (still level 0 < 256) -> all level 0; the OVERSIZED one too
    assert 'autellix_calls_total{endpoint="/v1/chat/completions",engine="engine-0",level="0"} 3.0' in text
    assert 'autellix_call_errors_total{engine="engine-0",status="400"} 1.0' in text
    assert 'autellix_engine_preemptions_total{engine="engine-0"} 3.0' in text
    assert metric(text, "autellix_programs_active") == 1  # the program inferred for the OVERSIZED call
    assert 'autellix_programs_ended_total{how="ended"} 1.0' in text
    assert metric(text, "autellix_program_duration_seconds_count") == 1  # p
    assert 'autellix_service_total{engine="engine-0"} 300.0' in text


def test_calls_are_counted_by_entry_level(harness: Harness) -> None:
    for _ in range(4):  # 0, 100, 200, 300 -> levels 0, 0, 0, 1
        harness.client.post("/v1/chat/completions", json=chat("", max_tokens=100),
                            headers={"X-Program-ID": "q"})
    text = harness.client.get("/metrics").text
    assert 'autellix_calls_total{endpoint="/v1/chat/completions",engine="engine-0",level="1"} 1.0' in text
