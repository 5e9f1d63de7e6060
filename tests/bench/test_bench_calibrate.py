"""`autellix calibrate` against the FAKE upstream, whose step costs are known by construction."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fake_openai import ServeFake  # tests/bench/ is on sys.path (conftest.py)

from autellix.bench import calibrate as cal
from autellix.bench.calibration_file import (
    block_size_from_metrics,
    build_profile,
    kv_capacity_from_metrics,
    model_facts,
)
from autellix.bench.cli import _calibrate
from autellix.bench.prompts import PromptBuilder
from autellix.bench.targets import parse_target
from autellix.sim.cost import load_cost_model

# Shaped like a real CPU engine: a prefill token costs more than one more sequence in a decode batch.
PREFILL_BASE, PER_TOKEN, STEP, SLOWDOWN = 0.01, 1e-3, 0.01, 0.05


def _model_folder(tmp_path: Path) -> Path:
    cfg = {"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 128, "vocab_size": 1000, "dtype": "bfloat16"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4096)
    return tmp_path


def test_decode_step_from_streams_uses_the_full_batch_window() -> None:
    a = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # alone at first (fast), then 2 per step once b joins
    b = [2.0, 3.0, 4.0, 5.0, 6.0]
    assert cal.decode_step_from_streams([a, b]) == pytest.approx(1.0)


def test_model_facts_and_kv_capacity(tmp_path: Path) -> None:
    facts = model_facts(str(_model_folder(tmp_path)))
    assert facts is not None and facts["kv_bytes_per_token"] == 2 * 4 * 2 * 16 * 2
    assert model_facts(str(tmp_path / "missing")) is None
    text = 'vllm:cache_config_info{block_size="128",kv_cache_size_tokens="93184",num_gpu_blocks="728"} 1.0'
    assert kv_capacity_from_metrics(text) == 93184
    assert kv_capacity_from_metrics('vllm:cache_config_info{block_size="16",num_gpu_blocks="10"} 1') == 160
    assert block_size_from_metrics(text) == 128
    assert block_size_from_metrics("vllm:num_requests_running 0") is None


def test_measures_the_fakes_step_costs(serve_fake: ServeFake, builder: PromptBuilder, tmp_path: Path) -> None:
    _, url = serve_fake(prefill_base=PREFILL_BASE, prefill_per_token=PER_TOKEN, decode_step=STEP,
                        batch_slowdown=SLOWDOWN)

    async def go() -> cal.Measurements:
        async with httpx.AsyncClient() as client:
            prober = cal.Prober(client, parse_target(f"fake={url}"), "fake-model", builder)
            return await cal.measure(prober, [16, 64, 128, 256], [1, 2, 4], [64, 256], decode_tokens=12,
                                     repeats=1)

    m = asyncio.run(go())
    # The fake's sleeps never end early, so each TTFT is at least the fake's own; how much more depends
    # on the machine's load, which no test bounds (once, on a loaded machine, a TTFT came back more than
    # 25% over): upper bounds and fit quality are figures `autellix calibrate` prints. A decode step is a
    # mean gap between received chunks, and a loaded client receives chunks in bursts, so it can come out
    # below the fake's sleep (once under 0.9x of it): only a gross under-measurement fails here.
    assert len(m.prefill) == 4 and len(m.decode) == 6
    for p in m.prefill:
        assert p.ttft_s >= PREFILL_BASE + PER_TOKEN * p.n - 1e-3, p
    for d in m.decode:
        assert d.step_s >= 0.5 * STEP * (1 + SLOWDOWN * (d.B - 1)), d
    facts = model_facts(str(_model_folder(tmp_path)))
    profile = build_profile(m, "tiny", facts, 4096, "cpu", url)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(profile))
    cm = load_cost_model(path=path, model="tiny")  # the simulator's loader accepts the file
    assert cm.kv_capacity_tokens == pytest.approx(4096, abs=16)
    for p in m.prefill:
        assert 0 < cm.step_time(0, 0, [(p.n, 0)]) < 10  # a finite, positive prediction per measured prompt


def test_calibrate_command_writes_a_loadable_file(serve_fake: ServeFake, tmp_path: Path) -> None:
    _, url = serve_fake(prefill_base=0.005, decode_step=0.004, model_root=str(_model_folder(tmp_path)))
    args = type("Args", (), dict(
        target=url, out=str(tmp_path / "c.json"), key=None, model=None, model_path=None, tokenizer="gpt2",
        device="cpu", prefill_lengths=[16, 64, 256], batches=[1, 2], contexts=[32, 64], decode_tokens=6,
        repeats=1, kv_capacity_tokens=None, block_size=None))()
    assert asyncio.run(_calibrate(args)) == 0
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["fake-model"]["kv_capacity_tokens"] == 16000  # the fake's /metrics: 125 blocks x 128
    assert data["fake-model"]["block_tokens"] == 128
    cm = load_cost_model(path=tmp_path / "c.json", model="fake-model")
    assert cm.block_tokens == 128 and cm.request_overhead_s == data["request_overhead_s"] > 0


def test_calibrate_reports_an_unreachable_engine(dead_url: str, tmp_path: Path) -> None:
    args = type("Args", (), dict(target=dead_url, out=str(tmp_path / "c.json"), key=None, model=None,
                                 model_path=None, tokenizer="gpt2", kv_capacity_tokens=None,
                                 block_size=None))()
    with pytest.raises(ValueError, match="did not answer"):
        asyncio.run(_calibrate(args))
