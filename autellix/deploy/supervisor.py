"""Local engine processes for `autellix serve`: GPU assignment, start, readiness, restart, shutdown.

Each engine's process group is an EngineProcess (autellix.deploy.lifecycle: start, watch, kill, clean
/dev/shm); this module decides which GPUs each gets and when a dead one comes back.

Invariants:
- Once `stop_all` has begun, nothing is (re)started: the monitor checks `stopping` under the same lock.
- An engine that dies is restarted on the same port and GPUs unless restarts are off, after
  `restart_delay` (at once if it had become healthy, else a back-off over consecutive failed starts).
  The gateway routes around it meanwhile and takes it back when up.
- A dead engine's whole group is buried (killed, /dev/shm cleaned) as soon as its death is seen, before
  the back-off: its engine core and workers would otherwise keep the CPU, memory and ports meanwhile.
  `stop_all` stops every group and cleans up after each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autellix.deploy.launch import start_engine
from autellix.deploy.lifecycle import EngineProcess, restart_delay

Report = Callable[[str], None]


@dataclass(slots=True, eq=False)
class LocalEngine:
    """One local engine: its port and GPUs, its process group, and its restart bookkeeping."""

    index: int
    port: int
    gpus: str | None
    log: Path
    group: EngineProcess
    restarts: int = 0
    failed_starts: int = 0
    """Consecutive incarnations that died before they were healthy (the back-off grows with it)."""
    next_restart: float = 0.0
    ready: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen:
        """The current engine process (only valid once started)."""
        return self.group.process


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
    """The local engines of one `autellix serve`; `report` receives one line per event."""

    def __init__(self, model: str, policy: str, ports: Sequence[int], log_dir: Path,
                 engine_kwargs: dict, restart: bool = True, report: Report = print) -> None:
        self.model, self.policy = model, policy
        self.engine_kwargs = engine_kwargs
        self.restart = restart
        self.report = report
        log_dir.mkdir(parents=True, exist_ok=True)
        gpus = assign_gpus(visible_gpus(), len(ports))
        self.engines = [self._engine(i, port, g, log_dir / f"engine-{i}.log", len(ports))
                        for i, (port, g) in enumerate(zip(ports, gpus, strict=True))]
        self.stopping = False
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def _engine(self, index: int, port: int, gpus: str | None, log: Path, n: int) -> LocalEngine:
        def launch(env: dict[str, str]) -> subprocess.Popen:
            return start_engine(self.model, self.policy, port, log=log, env=env, **self.engine_kwargs)

        env = {"CUDA_VISIBLE_DEVICES": gpus} if gpus is not None else {}
        return LocalEngine(index, port, gpus, log, EngineProcess(index, n, launch, env))

    def _start(self, engine: LocalEngine) -> None:
        engine.group.start()
        engine.started, engine.ready = time.monotonic(), False

    def start_all(self) -> None:
        with self._lock:
            for engine in self.engines:
                self._start(engine)
                gpu = f" gpus={engine.gpus}" if engine.gpus is not None else ""
                self.report(f"engine-{engine.index}: pid {engine.process.pid} port {engine.port}{gpu} "
                            f"log {engine.log}")

    def exited(self) -> list[LocalEngine]:
        return [e for e in self.engines if e.group.proc is not None and not e.group.alive()]

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
                        if engine.group.alive():
                            engine.ready = engine.ready or answers_health(engine.url)
                            engine.group.record()
                for engine in self.exited():
                    self._tend(engine, time.monotonic())

    def _tend(self, engine: LocalEngine, now: float) -> None:
        """A dead engine: bury it and schedule its restart on first sight; restart it when due."""
        if engine.next_restart == 0.0:
            engine.failed_starts = 0 if engine.ready else engine.failed_starts + 1
            delay = restart_delay(engine.failed_starts) if self.restart else None
            self.report(f"engine-{engine.index} (port {engine.port}) exited with code "
                        f"{engine.process.returncode}" + (f"; restarting in {delay:.0f}s"
                                                       if delay is not None else ""))
            removed = engine.group.bury()
            if removed:
                self.report(f"engine-{engine.index}: removed {len(removed)} file(s) it left in /dev/shm")
            engine.next_restart = now + delay if delay is not None else float("inf")
        elif now >= engine.next_restart:
            engine.restarts += 1
            engine.next_restart = 0.0
            self._start(engine)
            self.report(f"engine-{engine.index}: restarted (pid {engine.process.pid}, "
                        f"restart {engine.restarts})")

    def stop_all(self) -> None:
        """Stop every engine's group at once (each waits for its own), then nothing restarts."""
        with self._lock:
            self.stopping = True
            groups = [e.group for e in self.engines if e.group.proc is not None]
        threads = [threading.Thread(target=g.stop) for g in groups]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def answers_health(url: str) -> bool:
    """The engine answers GET /health with 200 now."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
