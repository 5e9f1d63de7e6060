"""What a killed engine leaves behind in /dev/shm, and removing it (Linux; elsewhere these are no-ops).

vLLM's engine core creates shared-memory segments (`psm_*`, its broadcast queues between the engine
core and its workers) and Python multiprocessing semaphores (`sem.mp-*`). Their creator's
multiprocessing resource tracker unlinks them on a clean exit, but the tracker lives in the engine's
process group: when the group is killed (a crash, SIGKILL, a restart) nothing removes them, and each
dead engine keeps hundreds of MB of /dev/shm.

So whoever starts an engine records which /dev/shm files the engine's processes map or hold open while
they live (`shm_in_use`), and the multiprocessing files (`psm_*`, `sem.mp-*`) that appeared while it ran
(`shm_names` before and after: some semaphores are opened only for a moment during start-up), and once
the whole group is gone removes those that no live process uses (`remove_unused`). Invariant: a file
some live process maps or holds open is never removed, so another engine's segments are safe even if
they were recorded too. "Uses" is decided by inode, not by name: glibc's sem_open creates a semaphore
under a temporary name, maps it, then links it to its real name and unlinks the temporary one, so its
creator's /proc/<pid>/maps shows only `/dev/shm/sem.XXXXXX (deleted)`. By name, a live engine's new
semaphore looked unused, and burying a dead engine while another started once removed the starting
engine's semaphore before its spawned child opened it (the child then failed to start).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

SHM = "/dev/shm/"
PATTERNS = ("psm_", "sem.mp-")
"""Files Python's multiprocessing creates (shared_memory segments, named semaphores)."""
_PROC = Path("/proc")


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (the group leader may already be gone)."""
    pids = []
    for entry in _proc_pids():
        try:
            stat = (_PROC / str(entry) / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            pids.append(entry)
    return pids


def shm_in_use(pids: Iterable[int]) -> set[str]:
    """The /dev/shm files these processes map or hold open, by the name they were opened under."""
    return {path for path, _ in _shm_used(pids)}


def _shm_used(pids: Iterable[int]) -> set[tuple[str, int]]:
    """(name, inode) of each /dev/shm file these processes map or hold open."""
    found: set[tuple[str, int]] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in (_PROC / str(pid) / "maps").read_text().splitlines():
                # address perms offset dev inode pathname: the pathname may hold spaces
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith(SHM):
                    found.add((fields[5].removesuffix(" (deleted)"), int(fields[4])))
        with contextlib.suppress(OSError):
            for fd in (_PROC / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith(SHM):
                        found.add((target.removesuffix(" (deleted)"), os.stat(fd).st_ino))
    return found


def shm_names() -> set[str]:
    """The multiprocessing files in /dev/shm now (full paths)."""
    try:
        return {SHM + n for n in os.listdir(SHM) if n.startswith(PATTERNS)}
    except OSError:
        return set()


def remove_unused(paths: Iterable[str]) -> list[str]:
    """Unlink those of `paths` that still exist and no live process uses; returns what was removed."""
    candidates = {p for p in paths if p.startswith(SHM) and os.path.exists(p)}
    if not candidates:
        return []
    used = _shm_used(_proc_pids())
    names, inodes = {name for name, _ in used}, {inode for _, inode in used}
    removed = []
    for path in sorted(candidates - names):
        try:
            if os.stat(path).st_ino in inodes:  # e.g. a live semaphore its creator maps by another name
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def _proc_pids() -> list[int]:
    try:
        return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []
