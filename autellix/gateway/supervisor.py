"""Local engine processes for `autellix serve`: start, GPU assignment, readiness, restart, shutdown.

Invariants:
- Every engine runs in its own process group (autellix.engine.launch.start_engine), and `stop_all` ends
  each whole group (API server, engine core, workers): no orphans after a clean shutdown.
- Once `stop_all` has begun, nothing is (re)started: the monitor checks `stopping` under the same lock.
- An engine that dies is restarted on the same port and GPUs unless restarts are off: at once if it
  had become healthy (it was serving: not a crash loop), else after a back-off (5 s doubling to 60 s
  over consecutive failed starts). The gateway routes around it meanwhile and takes it back when up.
- A dead engine's whole group is killed as soon as its death is seen (its engine core and workers
  would otherwise keep the CPU, memory and ports during the back-off), and once the group is gone the
  /dev/shm files it used are removed (autellix.engine.leftovers); the same after `stop_all`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autellix.engine.launch import cpu_binding, start_engine, stop_engine
from autellix.engine.leftovers import group_pids, remove_unused, shm_in_use, shm_names

Report = Callable[[str], None]


@dataclass(slots=True)
class LocalEngine:
    index: int
    port: int
    gpus: str | None
    log: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    failed_starts: int = 0
    """Consecutive incarnations that died before they were healthy (the back-off grows with it)."""
    next_restart: float = 0.0
    ready: bool = False
    started: float = field(default_factory=time.monotonic)
    shm: set[str] = field(default_factory=set)
    """/dev/shm files the current process group has used (removed once it is dead)."""
    shm_before: set[str] = field(default_factory=set)
    """The multiprocessing files in /dev/shm when it started (files that appear later may be its)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen:
        """The current engine process (only valid once started)."""
        if self.proc is None:
            raise RuntimeError(f"engine-{self.index} was never started")
        return self.proc


def visible_gpus() -> list[str]:
    """GPU ids engines may use: CUDA_VISIBLE_DEVICES if set, else those `nvidia-smi -L` lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def assign_gpus(gpus: Sequence[str], engines: int) -> list[str | None]:
    """Split GPUs evenly (engine i gets a contiguous slice, for vLLM's own tensor parallelism);
    with fewer GPUs than engines, engines share them round robin. No GPUs: None for each."""
    if not gpus:
        return [None] * engines
    per = len(gpus) // engines
    if per == 0:
        return [gpus[i % len(gpus)] for i in range(engines)]
    return [",".join(gpus[i * per:(i + 1) * per]) for i in range(engines)]


class Supervisor:
    def __init__(self, model: str, policy: str, ports: Sequence[int], log_dir: Path,
                 engine_kwargs: dict, restart: bool = True, report: Report = print) -> None:
        self.model, self.policy = model, policy
        self.engine_kwargs = engine_kwargs
        self.restart = restart
        self.report = report
        log_dir.mkdir(parents=True, exist_ok=True)
        gpus = assign_gpus(visible_gpus(), len(ports))
        self.engines = [LocalEngine(i, port, g, log_dir / f"engine-{i}.log")
                        for i, (port, g) in enumerate(zip(ports, gpus, strict=True))]
        self.stopping = False
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def _start(self, engine: LocalEngine) -> None:
        env = cpu_binding(engine.index, len(self.engines))
        if engine.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = engine.gpus
        engine.shm_before = shm_names()
        engine.proc = start_engine(self.model, self.policy, engine.port, log=engine.log, env=env,
                                   **self.engine_kwargs)
        engine.started, engine.ready = time.monotonic(), False

    def start_all(self) -> None:
        with self._lock:
            for engine in self.engines:
                self._start(engine)
                gpu = f" gpus={engine.gpus}" if engine.gpus is not None else ""
                self.report(f"engine-{engine.index}: pid {engine.process.pid} port {engine.port}{gpu} "
                            f"log {engine.log}")

    def exited(self) -> list[LocalEngine]:
        return [e for e in self.engines if e.proc is not None and e.proc.poll() is not None]

    def start_monitor(self, interval: float = 1.0) -> None:
        """Watch engines in a daemon thread; restart dead ones (if enabled) with back-off."""
        self._monitor = threading.Thread(target=self._watch, args=(interval,), daemon=True,
                                         name="autellix-engine-monitor")
        self._monitor.start()

    def _watch(self, interval: float) -> None:
        ticks = 0
        while not self.stopping:
            time.sleep(interval)
            ticks += 1
            with self._lock:
                if self.stopping:
                    return
                if ticks % 5 == 1:  # health, and what live engines map in /dev/shm (to clean up after them)
                    for engine in self.engines:
                        if engine.proc is not None and engine.proc.poll() is None:
                            engine.ready = engine.ready or answers_health(engine.url)
                            engine.shm |= shm_in_use(group_pids(engine.proc.pid))
                now = time.monotonic()
                for engine in self.exited():
                    if engine.next_restart == 0.0:
                        engine.failed_starts = 0 if engine.ready else engine.failed_starts + 1
                        delay = (None if not self.restart else
                                 0.0 if not engine.failed_starts else
                                 min(60.0, 5.0 * 2 ** (engine.failed_starts - 1)))
                        self.report(f"engine-{engine.index} (port {engine.port}) exited with code "
                                    f"{engine.process.returncode}" + (f"; restarting in {delay:.0f}s"
                                                                   if delay is not None else ""))
                        self._bury(engine)
                        engine.next_restart = now + delay if delay is not None else float("inf")
                    elif now >= engine.next_restart:
                        engine.restarts += 1
                        engine.next_restart = 0.0
                        self._start(engine)
                        self.report(f"engine-{engine.index}: restarted (pid {engine.process.pid}, "
                                    f"restart {engine.restarts})")

    def _bury(self, engine: LocalEngine) -> None:
        """Kill what is left of a dead engine's group, wait until it is gone, remove its /dev/shm files."""
        proc = engine.process
        engine.shm |= shm_in_use(group_pids(proc.pid))
        _kill_group(proc)
        _wait_gone([proc.pid], 15.0)
        removed = remove_unused(engine.shm | (shm_names() - engine.shm_before))
        engine.shm = set()
        if removed:
            self.report(f"engine-{engine.index}: removed {len(removed)} file(s) it left in /dev/shm")

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            started = [e for e in self.engines if e.proc is not None]
            procs = [e.process for e in started]
            shm: set[str] = set().union(*(e.shm | shm_in_use(group_pids(e.process.pid)) for e in started))
            before = set.intersection(*(e.shm_before for e in started)) if started else set()
        threads = [threading.Thread(target=stop_engine, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for proc in procs:  # stop_engine skips a group whose leader already exited: end it too
            _kill_group(proc)
        _wait_gone([p.pid for p in procs], 15.0)  # every member (engine core, workers) is gone
        remove_unused(shm | (shm_names() - before) if started else shm)


def _wait_gone(pgids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for pgid in pgids:
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)


def answers_health(url: str) -> bool:
    """The engine answers GET /health with 200 now."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
