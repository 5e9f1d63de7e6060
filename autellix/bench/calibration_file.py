"""Turn `calibrate` measurements into a calibration file in the simulator's format (the schema of
shared/calibration/*.json, read by `autellix.sim.cost.load_cost_model(path=..., model=KEY)`).

Mapping (an engine seen through its API cannot separate projections from attention, so the split is
a fit, not a measurement):
- prefill step(n) = TTFT(n) - request overhead, fitted as a + b*n + c*n^2 (non-negative, relative error);
  `linear` rows get the a + b*n part at each measured n, `prefill.attn_s` the c*n^2 part (floored at 1 us
  so relative fits stay finite). Their sum is the fitted prefill step.
- `decode` rows are the measured steps; `eager_s` = `graph_s` (the engine runs as it runs).
- `weight_GB`, `kv_bytes_per_token` and `config` come from the model folder when it is on this machine;
  KV capacity from vLLM's `/metrics` (`vllm:cache_config_info`), written as `gpu_mem_GB` chosen so that the
  cost model's capacity formula (90% utilisation) gives back the engine's real KV token capacity.
- `swap`: not measured (vLLM V1 preempts by recompute); nominal host-copy figures, flagged in `notes`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from autellix.bench.calibrate import Measurements
from autellix.sim.cost import BLOCK_TOKENS, nnls_rel

UTILIZATION = 0.9  # the cost model's default; gpu_mem_GB is derived with the same value
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}
_MIN_ATTN_S = 1e-6


def model_facts(root: str | None) -> dict[str, Any] | None:
    """`config`, `weight_GB`, `kv_bytes_per_token` of a local Hugging Face model folder (None if absent)."""
    if not root or not (Path(root) / "config.json").is_file():
        return None
    cfg = json.loads((Path(root) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    heads = int(cfg["num_attention_heads"])
    hd = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    kv = int(cfg.get("num_key_value_heads") or heads)
    layers = int(cfg["num_hidden_layers"])
    dtype_bytes = _DTYPE_BYTES.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"), 2)
    weights = sum(p.stat().st_size for p in Path(root).glob("*.safetensors")) or sum(
        p.stat().st_size for p in Path(root).glob("*.bin"))
    return {
        "config": {"L": layers, "D": int(cfg["hidden_size"]), "H": heads, "KV": kv, "hd": hd,
                   "F": int(cfg.get("intermediate_size", 0)), "V": int(cfg.get("vocab_size", 0))},
        "weight_GB": weights / 1e9,
        "kv_bytes_per_token": 2 * layers * kv * hd * dtype_bytes,
    }


def kv_capacity_from_metrics(text: str) -> int | None:
    """KV-cache tokens from vLLM's Prometheus text: the `kv_cache_size_tokens` label, else
    `num_gpu_blocks` x `block_size`."""
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info"):
            tokens = re.search(r'kv_cache_size_tokens="(\d+)"', line)
            if tokens:
                return int(tokens.group(1))
            blocks = re.search(r'num_gpu_blocks="(\d+)"', line)
            size = re.search(r'block_size="(\d+)"', line)
            if blocks and size:
                return int(blocks.group(1)) * int(size.group(1))
    return None


def block_size_from_metrics(text: str) -> int | None:
    """The engine's KV block size (tokens) from vLLM's `cache_config_info` labels."""
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info"):
            size = re.search(r'block_size="(\d+)"', line)
            if size:
                return int(size.group(1))
    return None


def fit_prefill(m: Measurements) -> tuple[float, float, float, float]:
    """(a, b, c, mean relative error) of step(n) = a + b*n + c*n^2 on the overhead-corrected TTFTs."""
    n = np.array([p.n for p in m.prefill], float)
    step = np.array([max(p.ttft_s - m.request_overhead_s, 1e-5) for p in m.prefill])
    a, b, c = nnls_rel(np.stack([np.ones_like(n), n, n * n], 1), step)
    pred = a + b * n + c * n * n
    return float(a), float(b), float(c), float(np.mean(np.abs(pred - step) / step))


def build_profile(m: Measurements, key: str, facts: dict[str, Any], kv_capacity_tokens: int,
                  device: str, target_url: str, block_tokens: int = BLOCK_TOKENS) -> dict[str, Any]:
    """The calibration file's JSON object, with one model entry named `key`."""
    a, b, c, err = fit_prefill(m)
    kv_bytes = float(facts["kv_bytes_per_token"])
    block_bytes = block_tokens * kv_bytes * 256
    gpu_mem = (facts["weight_GB"] + kv_capacity_tokens * kv_bytes / 1e9) / UTILIZATION * (1 + 1e-9)
    entry = {
        "config": facts["config"],
        "weight_GB": facts["weight_GB"],
        "kv_bytes_per_token": kv_bytes,
        "block_tokens": block_tokens,
        "linear": [{"M": p.n, "s": a + b * p.n} for p in m.prefill],
        "decode": [{"B": d.B, "L": d.L, "eager_s": d.step_s, "graph_s": d.step_s} for d in m.decode],
        "prefill": [{"n": p.n, "attn_s": max(c * p.n * p.n, _MIN_ATTN_S)} for p in m.prefill],
        "swap": {"blocks": 256, "bytes": block_bytes, "many_small_s": block_bytes / 1e9,
                 "gather_one_copy_s": block_bytes / 10e9, "h2d_one_copy_s": block_bytes / 10e9},
        "kv_capacity_tokens": kv_capacity_tokens,
        "measured": {"prefill_ttft": [{"n": p.n, "ttft_s": p.ttft_s} for p in m.prefill],
                     "decode_step": [{"B": d.B, "L": d.L, "s": d.step_s} for d in m.decode],
                     "prefill_fit_mean_rel_error": err},
        "notes": [
            "measured through the OpenAI API by `autellix calibrate` (TTFT and stream chunk gaps)",
            "linear/prefill split is a fit of TTFT(n) - request_overhead_s = a + b*n + c*n^2",
            "swap not measured (vLLM V1 preempts by recompute): nominal 1 GB/s per-block, 10 GB/s batched",
        ],
    }
    return {
        "device": device, "source": "autellix calibrate", "target": target_url,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpu_mem_GB": gpu_mem, "request_overhead_s": m.request_overhead_s, "ceilings": {}, key: entry,
    }
