"""`autellix serve` pieces without vLLM: GPU assignment, config, the supervisor (with FakeEngine
processes standing in for engines), and the command itself attached to a FakeEngine."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_engine import FakeEngine, ServerThread, free_port

from autellix.deploy import serve, supervisor
from autellix.deploy.supervisor import Supervisor, assign_gpus

FAKE = Path(__file__).parents[1] / "gateway" / "fake_engine.py"
ROOT = Path(__file__).resolve().parents[2]


def test_assign_gpus() -> None:
    assert assign_gpus([], 2) == [None, None]
    assert assign_gpus(["0", "1", "2", "3"], 2) == ["0,1", "2,3"]
    assert assign_gpus(["0", "1", "2"], 2) == ["0", "1"]
    assert assign_gpus(["5"], 3) == ["5", "5", "5"]


def test_visible_gpus_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert supervisor.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert supervisor.visible_gpus() == []


def test_gateway_config_from_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTELLIX_API_KEYS", "k1,k2")
    monkeypatch.setenv("AUTELLIX_PREFILL_WEIGHT", "0.5")
    args = argparse.Namespace(api_key=["k3"], program_ttl=30.0, balancer="round_robin", long_prompt=99,
                              infer_programs="off", user_programs=True, max_body_mb=0.5,
                              model_alias=["claude-*=m"], policy="autellix", kv_capacity=None)
    config = serve.gateway_config(args, ["http://127.0.0.1:1"])
    assert not config.pause_gate and config.kv_capacity_tokens is None
    assert config.api_keys == {"k1", "k2", "k3"} and config.balancer == "round_robin"
    assert not config.infer_programs and config.user_programs and config.max_body_bytes == 1 << 19
    assert config.policy.table_ttl == 30 and config.policy.prefill_weight == 0.5 and config.long_prompt == 99
    assert config.model_aliases == (("claude-*", "m"),)


def test_serve_thunderagent_starts_stock_engines_behind_the_pause_gate(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    from autellix import model
    from autellix.cli import parse_args
    from autellix.deploy import launch

    args = parse_args(["serve", "--policy", "thunderagent", "--kv-capacity", "50000"])
    config = serve.gateway_config(args, ["http://127.0.0.1:1"])
    assert config.pause_gate and config.kv_capacity_tokens == 50000 and config.system == "thunderagent"
    started: list[str] = []
    monkeypatch.setattr(launch, "check_vllm_version", lambda allow: "0.32.0")
    monkeypatch.setattr(model, "resolve_model", lambda name: tmp_path)
    monkeypatch.setattr(supervisor, "Supervisor", lambda m, policy, *a, **k: started.append(policy))
    serve._make_supervisor(args, 1, 9000, [])
    assert started == ["vllm"]  # no plugin: the rule runs in the gateway


def fake_start_engine(model: str, policy: str, port: int, *, log: Path, env: dict[str, str],
                      **kwargs: Any) -> subprocess.Popen:
    """Stands in for autellix.deploy.launch.start_engine: a FakeEngine in its own process group."""
    return subprocess.Popen([sys.executable, str(FAKE), "--port", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def wait(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_supervisor_restarts_dead_engines_and_stops_all(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setattr(supervisor, "start_engine", fake_start_engine)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(supervisor, "visible_gpus", lambda: [])
    messages: list[str] = []
    ports = [free_port(), free_port()]
    sup = Supervisor("m", "autellix", ports, tmp_path, {}, restart=True, report=messages.append)
    sup.start_all()
    try:
        wait(lambda: all(healthy(p) for p in ports))
        first = sup.engines[1].process.pid
        os.killpg(first, signal.SIGKILL)
        sup.start_monitor(interval=0.1)
        wait(lambda: sup.engines[1].process.pid != first and healthy(ports[1]), timeout=30)
        assert any("exited" in m for m in messages) and any("restarted" in m for m in messages)
    finally:
        pids = [e.process.pid for e in sup.engines]
        sup.stop_all()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)


def test_serve_command_attached_engine_and_sigterm() -> None:
    fake = FakeEngine("attached")
    server = ServerThread(fake.app).start()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "autellix.cli", "serve", "--engine-url", server.url,
                             "--port", str(port)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: healthy(port))
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", trust_env=False,
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and fake.requests
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


def test_serve_rejects_no_engines() -> None:
    from autellix.cli import main

    assert main(["serve", "--engines", "0"]) == 2


def test_serve_options_after_the_model_stay_ours() -> None:
    """docs/gateway.md's `autellix serve MODEL_DIR --engines 4 -- --tensor-parallel-size 2`."""
    from autellix.cli import parse_args

    args = parse_args(["serve", "/m", "--engines", "4", "--", "--tensor-parallel-size", "2"])
    assert (args.model, args.engines, args.vllm_args) == ("/m", 4, ["--tensor-parallel-size", "2"])


def test_only_loopback_ray_addresses_pin_this_node_to_loopback() -> None:
    from autellix.deploy.ray_engines import on_loopback

    assert on_loopback("127.0.0.1:6379") and on_loopback("ray://localhost:10001")
    assert not on_loopback("10.0.0.5:6379") and not on_loopback("ray://head:10001")
