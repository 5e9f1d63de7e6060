"""Hardware and model presets, and reading/validating GPU calibration files.

A calibration file is the JSON written by `shared/tools/gpu_profile.py`: top-level `device`, `ceilings`,
and one entry per profiled model. This module only finds, reads and validates files; fitting lives in
`cost.py`.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GPU:
    name: str
    mem_GB: float  # marketed capacity, decimal GB (conservative: the H200 reports ~150e9 bytes)
    profile_file: str  # calibration JSON measured on this card
    device_match: str  # substring of the file's `device` field that identifies this card
    # Per-direction NVLink 4 bandwidth of an SXM card (18 links x 25 GB/s). Vendor figure, NOT measured:
    # used only for the tensor-parallel all-reduce estimate.
    nvlink_GBps: float = 450.0
    # Latency of one small all-reduce among 4 GPUs on NVLink (vLLM custom all-reduce is ~5-10 us). Estimate.
    allreduce_latency_s: float = 10e-6


@dataclass(frozen=True)
class ModelPreset:
    name: str
    profile_key: str  # entry in the calibration file
    tp: int  # GPUs per engine; the profile entry is one GPU's shard when tp > 1


GPUS: dict[str, GPU] = {
    "h200": GPU("h200", 141.0, "h200_torch_profile.json", "H200"),
    "h100": GPU("h100", 80.0, "h100_torch_profile.json", "H100"),
}
# Card of unknown make (user file): no capacity, default interconnect estimates.
CUSTOM_GPU = GPU("custom", 0.0, "", "\0")
MODELS: dict[str, ModelPreset] = {
    "llama3.1-8b": ModelPreset("llama3.1-8b", "llama3.1-8b", 1),
    "llama3.1-70b": ModelPreset("llama3.1-70b", "llama3.1-70b-tp4-shard", 4),
}

ENV_DIR = "AUTELLIX_CALIBRATION_DIR"
_PACKAGED = Path(__file__).resolve().parent / "calibration"
# <root>/main/autellix/sim/hardware.py -> <root>/shared/calibration (CI puts a copy of shared/ beside the
# clone)
_SHARED = Path(__file__).resolve().parents[3] / "shared" / "calibration"


def gpu_preset(hardware: str) -> GPU:
    try:
        return GPUS[hardware.lower()]
    except KeyError:
        raise ValueError(f"unknown hardware {hardware!r}; choices: {', '.join(sorted(GPUS))}") from None


def model_preset(model: str) -> ModelPreset:
    try:
        return MODELS[model.lower()]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; choices: {', '.join(sorted(MODELS))}") from None


def calibration_dirs() -> list[Path]:
    """Directories searched for preset files, in order: $AUTELLIX_CALIBRATION_DIR (an explicit override),
    the copy shipped inside the package, then ../shared/calibration beside the repository."""
    dirs = [Path(os.environ[ENV_DIR])] if os.environ.get(ENV_DIR) else []
    return dirs + [_PACKAGED, _SHARED]


def find_calibration_file(filename: str) -> Path:
    for d in calibration_dirs():
        if (d / filename).is_file():
            return d / filename
    raise FileNotFoundError(f"calibration file {filename} not found in: "
                            + ", ".join(str(d) for d in calibration_dirs()) + f" (set {ENV_DIR})")


def tp_from_key(key: str) -> int:
    """Tensor-parallel degree encoded in an entry name like `llama3.1-70b-tp4-shard` (1 when absent)."""
    m = re.search(r"-tp(\d+)-shard$", key)
    return int(m.group(1)) if m else 1


def _need(obj: Any, key: str, where: str) -> Any:
    """Field `key` of mapping `obj`, or a ValueError naming the full field path."""
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"calibration file is missing field '{where}.{key}'" if where
                         else f"calibration file is missing field '{key}'")
    return obj[key]


def _need_rows(entry: dict, table: str, fields: tuple[str, ...], where: str, min_rows: int) -> list[dict]:
    rows = _need(entry, table, where)
    if not isinstance(rows, list) or len(rows) < min_rows:
        raise ValueError(f"calibration field '{where}.{table}' needs a list of at least {min_rows} rows")
    for i, row in enumerate(rows):
        for f in fields:
            v = _need(row, f, f"{where}.{table}[{i}]")
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"calibration field '{where}.{table}[{i}].{f}' must be a non-negative "
                                 "number")
    return rows


def validate_entry(profile: dict, key: str, decode_column: str = "graph_s") -> dict:
    """Check that model entry `key` has every field the fit uses; return the entry.

    Raises ValueError naming the first missing field, e.g. `llama3.1-8b.swap.gather_one_copy_s`."""
    if key not in profile:
        models = [k for k, v in profile.items() if isinstance(v, dict) and "linear" in v]
        raise ValueError(f"calibration file is missing field '{key}' (model entries present: {models})")
    entry = profile[key]
    for f in ("weight_GB", "kv_bytes_per_token"):
        _need(entry, f, key)
    _need_rows(entry, "linear", ("M", "s"), key, 2)
    _need_rows(entry, "decode", ("B", "L", decode_column), key, 3)
    _need_rows(entry, "prefill", ("n", "attn_s"), key, 3)
    swap = _need(entry, "swap", key)
    for f in ("blocks", "many_small_s", "gather_one_copy_s", "h2d_one_copy_s"):
        _need(swap, f, f"{key}.swap")
    if tp_from_key(key) > 1:  # the all-reduce estimate needs the hidden size, layer count and copy ceiling
        cfg = _need(entry, "config", key)
        _need(cfg, "L", f"{key}.config")
        _need(cfg, "D", f"{key}.config")
        _need(_need(profile, "ceilings", ""), "copy_GBps", "ceilings")
    return entry


def read_profile(path: str | Path) -> dict:
    """Parse a calibration JSON file (validation of a model entry is separate: `validate_entry`)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"calibration file {p} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"calibration file {p} must hold a JSON object")
    return data


def gpu_for_device(device: str) -> GPU | None:
    """Preset whose name appears in the file's `device` string (e.g. 'NVIDIA H100 80GB HBM3')."""
    for g in GPUS.values():
        if g.device_match.lower() in device.lower():
            return g
    return None
