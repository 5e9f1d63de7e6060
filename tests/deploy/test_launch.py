"""The engine launcher's command line and environment (no engine is started here)."""

from __future__ import annotations

import pytest

from autellix.cli import parse_args
from autellix.deploy.launch import SCHEDULER_CLS, engine_argv, engine_env


def test_plugin_argv(tmp_path):
    argv = engine_argv(str(tmp_path), "plas", 8123, max_num_seqs=4, eager=True, extra=["--seed", "1"],
                       python="py")
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    assert f"--model {tmp_path}" in joined and "--port 8123" in joined and "--max-num-seqs 4" in joined
    assert "--enforce-eager" in argv and "--scheduling-policy priority" in joined
    assert argv[argv.index("--scheduler-cls") + 1].startswith("autellix.engine.vllm.Autellix")
    assert f"--served-model-name {tmp_path.name} {tmp_path}" in joined  # short name for a local folder
    assert argv[-2:] == ["--seed", "1"]


def test_stock_vllm_argv_has_no_plugin(tmp_path):
    argv = engine_argv(str(tmp_path), "vllm", 8000)
    assert "--scheduler-cls" not in argv and "--scheduling-policy" not in argv
    assert "AUTELLIX_POLICY" not in engine_env("vllm", {})
    with pytest.raises(ValueError):
        engine_argv(str(tmp_path), "srpt", 8000)


def test_env_carries_policy_and_knobs():
    env = engine_env("atlas", {"AUTELLIX_BETA": "4", "PYTHONPATH": "/x"})
    assert env["AUTELLIX_POLICY"] == "atlas" and env["AUTELLIX_BETA"] == "4"
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYTHONPATH"].endswith("/x")


def test_cli_registers_engine_and_model_commands():
    args = parse_args(["engine", "--policy", "plas", "--port", "9000", "--max-num-seqs", "2"])
    assert (args.policy, args.port, args.max_num_seqs, args.model, args.vllm_args) == (
        "plas", 9000, 2, None, [])
    # Options after the model are still ours; only what follows `--` goes to vLLM.
    args = parse_args(["engine", "/m", "--policy", "mlfq", "--", "--seed", "3", "--policy", "x"])
    assert (args.model, args.policy, args.vllm_args) == ("/m", "mlfq", ["--seed", "3", "--policy", "x"])
    with pytest.raises(SystemExit):  # a vLLM flag without `--` is an error, not silently forwarded
        parse_args(["engine", "/m", "--seed", "3"])
    with pytest.raises(SystemExit):  # `sim` takes nothing for vLLM
        parse_args(["sim", "--scenario", "paper-fig2", "--", "--seed", "3"])
    assert parse_args(["model", "prepare"]).func.__name__ == "_cmd_prepare"
    assert SCHEDULER_CLS == "autellix.engine.vllm.AutellixScheduler"


def test_engine_trace_flag_reaches_the_plugin(monkeypatch, tmp_path):
    started = {}
    monkeypatch.setattr("os.execve", lambda path, argv, env: started.update(argv=argv, env=env))
    args = parse_args(["engine", str(tmp_path), "--policy", "plas", "--trace"])
    args.func(args)
    assert started["env"]["AUTELLIX_TRACE"] == "1" and started["env"]["AUTELLIX_POLICY"] == "plas"
    args = parse_args(["engine", str(tmp_path), "--policy", "vllm", "--trace"])
    with pytest.raises(ValueError, match="--trace"):  # stock vLLM has no plugin to trace
        args.func(args)


def test_engine_prints_the_vllm_version_and_refuses_an_untested_one(monkeypatch, capsys):
    from autellix.deploy import launch

    assert launch.check_vllm_version().startswith("0.3")  # the installed, tested release
    assert "vLLM 0." in capsys.readouterr().err
    monkeypatch.setattr(launch, "vllm_version", lambda: "0.35.0")
    with pytest.raises(ValueError, match=r"0\.35\.0 is not a release .*--allow-untested-vllm"):
        launch.check_vllm_version()
    assert launch.check_vllm_version(allow_untested=True) == "0.35.0"
    assert "untested" in capsys.readouterr().err
