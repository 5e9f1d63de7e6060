"""Removing what a killed process group left in /dev/shm (autellix.deploy.leftovers), with real
shared-memory segments and a real killed process group."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from multiprocessing import shared_memory

import pytest

from autellix.deploy.leftovers import group_pids, remove_unused, shm_in_use, shm_names

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm") or not os.path.isdir("/proc"),
                                reason="Linux /dev/shm and /proc only")

# A child that creates a segment and a semaphore, then a grandchild in its group, then waits to be killed.
CHILD = """
import multiprocessing as mp, subprocess, sys, time
from multiprocessing import shared_memory
shm = shared_memory.SharedMemory(create=True, size=1 << 20)
lock = mp.get_context("spawn").Lock()
sub = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(shm.name, flush=True)
time.sleep(600)
"""


def test_a_killed_groups_segments_are_found_and_removed_and_live_ones_kept() -> None:
    mine = shared_memory.SharedMemory(create=True, size=4096)  # used by this live process
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        name = proc.stdout.readline().strip()
        time.sleep(0.2)
        members = group_pids(proc.pid)
        assert proc.pid in members and len(members) >= 2  # the child and its grandchild (and tracker)
        used = shm_in_use(members)
        assert f"/dev/shm/{name}" in used and any(p.startswith("/dev/shm/sem.") for p in used)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while group_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(f"/dev/shm/{name}")  # SIGKILL: nobody cleaned up
        removed = remove_unused(used | {f"/dev/shm/{mine.name}"})
        assert f"/dev/shm/{name}" in removed and not os.path.exists(f"/dev/shm/{name}")
        assert os.path.exists(f"/dev/shm/{mine.name}")  # a live process maps it: never removed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        mine.close()
        mine.unlink()


def test_a_live_semaphore_is_kept_though_its_creator_maps_it_by_another_name() -> None:
    # glibc's sem_open maps a temporary file, then links it to the real name: the creator's maps show
    # only `sem.XXXXXX (deleted)`. A spawn-context lock keeps its real name until the lock is freed.
    before = shm_names()
    lock = multiprocessing.get_context("spawn").Lock()
    try:
        new = {p for p in shm_names() - before if p.startswith("/dev/shm/sem.mp-")}
        assert len(new) == 1, new
        assert not new & shm_in_use([os.getpid()])  # by name it looks unused ...
        assert remove_unused(new) == [] and os.path.exists(new.pop())  # ... by inode it is not
    finally:
        del lock
