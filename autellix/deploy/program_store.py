"""The process table shared by several gateway replicas (`autellix serve --ray`, docs/deploy.md).

Here, not in the gateway, because it is Ray machinery: the gateway only states what it needs from a
shared table (autellix.gateway.sessions.SharedTable) and runs without Ray; `SharedPrograms`
(autellix.deploy.shared_programs) is that table's Ray implementation, made by `autellix serve --ray`.

`ProgramStore` (a named, detached Ray actor, so it outlives any replica; Ray restarts it when it dies)
holds the shared table: each program's owner, service, wait and engine pin, kept by the same
`ProcessTable` rule as one gateway, and the shared conversation index (autellix.gateway.conversations).
A replica keeps its own table as a cache and talks to the store twice per call:
- before the call, `pull`: the program's service, wait and pin (awaited, bounded by a timeout), which
  the replica's entry takes (max of both, so it never goes down), and the owner check;
- after it, an update (`apply`): the call's own contribution (its start snapshot, service, wait,
  engine), applied by the table's rule in the store. Pushing contributions rather than totals means two
  replicas serving one program at once never overwrite each other's increments.

Durability (the store's own death: a crash, SIGKILL of its worker, `ray.kill(store, no_restart=False)`):
- Every update carries (replica, seq), seq counting 1, 2, ... per replica; the store applies each one
  exactly once (`_Log`: the contiguous prefix applied, and the seqs applied past a gap).
- The store checkpoints its table, owners, applied seqs and hash key to Ray's GCS key-value store
  (which outlives actors) when a replica asks what is saved (`saved`, every `sync_s` = 0.05 s from
  each replica) and something changed, at most every 10 x the last checkpoint's cost.
- A replica keeps every update until a checkpoint holds it; when the store's incarnation (`epoch`)
  changes, it replays the rest, and republishes its conversation links.
So a restart loses nothing from replicas that live on: every update whose call was answered is in a
checkpoint or in its replica's buffer. It loses the updates a replica made since the last checkpoint if
that replica dies too before the new incarnation is up (at most ~sync_s + one checkpoint: tens of ms),
and pulls answered in the ~sync_s between the restart and the replays see the checkpoint's entry
(a read of a program the checkpoint lacks answers 503 for RECOVERY_S, not 404).
Unavailable store: replicas go on with their own entries (never the call), logged once a minute; a
read of a program the replica does not know answers 503 meanwhile.
Invariant: the store's service and wait for a program never decrease while it lives.
"""

from __future__ import annotations

import os
import pickle
import secrets
import time
from typing import Any, Protocol

from autellix.gateway.conversations import ConversationIndex, Entry, Query
from autellix.gateway.sessions import Snapshot
from autellix.policy.config import PolicyConfig

STORE_NAME = "autellix-programs"
CHECKPOINT_KEY = b"autellix-programs/checkpoint"
RECOVERY_S = 2.0
"""After a restart, reads of programs the checkpoint lacks answer "unknown yet" (503) this long: the
replicas' replays (every 0.05 s) bring what the checkpoint lacked."""
Op = tuple[int, str, tuple[Any, ...]]
"""One logged update: (seq, "push" | "end", its arguments)."""


class Checkpoints(Protocol):
    """Where the store keeps its checkpoint (Ray's GCS key-value store, or memory in tests)."""

    def load(self) -> bytes | None: ...

    def save(self, blob: bytes) -> None: ...


class GcsCheckpoints:
    """The checkpoint in Ray's GCS key-value store, one key per Ray namespace (deployment)."""

    def __init__(self) -> None:
        import ray

        self.namespace = f"autellix-store:{ray.get_runtime_context().namespace}"

    def load(self) -> bytes | None:
        from ray.experimental.internal_kv import _internal_kv_get

        return _internal_kv_get(CHECKPOINT_KEY, namespace=self.namespace)

    def save(self, blob: bytes) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        _internal_kv_put(CHECKPOINT_KEY, blob, overwrite=True, namespace=self.namespace)


class _Log:
    """Which of one replica's updates were applied: all seqs <= upto, and those in `past` (> upto)."""

    __slots__ = ("upto", "past")

    def __init__(self, upto: int = 0, past: set[int] | None = None) -> None:
        self.upto, self.past = upto, past or set()

    def first_time(self, seq: int) -> bool:
        """Record `seq`; False when it was applied already."""
        if seq <= self.upto or seq in self.past:
            return False
        self.past.add(seq)
        while self.upto + 1 in self.past:
            self.upto += 1
            self.past.discard(self.upto)
        return True


class ProgramStore:
    """The shared table (wrapped with `ray.remote` by SharedPrograms.connect). Its clock is its own;
    checkpoints keep ages, so a restart on another node keeps each program's idle time."""

    def __init__(self, policy: PolicyConfig, checkpoints: Checkpoints | None = None) -> None:
        self.table = policy.new_table()
        self.owners: dict[str, str | None] = {}
        self.index = ConversationIndex(policy.table_ttl)
        self.checkpoints = checkpoints if checkpoints is not None else GcsCheckpoints()
        self.epoch = secrets.token_hex(8)
        """This incarnation (replicas replay their unsaved updates when it changes)."""
        self.key = secrets.token_bytes(16)
        self.logs: dict[str, _Log] = {}
        self.saved_upto: dict[str, int] = {}
        self.dirty = False
        self._next_expiry = 0.0
        self._next_checkpoint = 0.0
        self.checkpoint_cost = 0.0
        """Seconds the last checkpoint took."""
        self.recovering_until = 0.0
        self._restore()

    # -- queries -----------------------------------------------------------------------------------

    def pid(self) -> int:
        """This incarnation's process (tests and the chaos soak kill it)."""
        return os.getpid()

    def hello(self) -> tuple[bytes, str]:
        """(hash key, epoch): what a replica needs before its first call."""
        return self.key, self.epoch

    def pull(self, program_id: str, owner: str | None, create: bool) -> Snapshot | None | bool:
        """The program's snapshot, opening it for `owner` when `create`; None when it is another
        owner's, or missing and not created; False (unknown yet) when it is missing during the
        RECOVERY_S after a restart, while the replicas replay what the checkpoint lacks."""
        if not create and program_id not in self.table and time.monotonic() < self.recovering_until:
            return False
        self._expire()
        if self.owners.get(program_id, owner) != owner or (program_id not in self.table and not create):
            return None
        program = self.table.start(program_id, time.monotonic())
        self.owners.setdefault(program_id, owner)
        program.last_arrival = time.monotonic()
        return program.service, program.wait, program.engine, program.completed_calls

    def match(self, query: Query) -> tuple[str, str, str] | None:
        """The shared conversation index's place for a call no replica's own index placed."""
        if query.chat:
            found = self.index.match_chat(query.chain[0], query.chain, query.handoff)
        else:
            found = self.index.match_text(query.chain[0], query.chain, query.window, query.start)
        return None if found is None else (found.program_id, found.thread, found.how)

    def learn(self, links: list[Entry]) -> None:
        self.index.learn(links)

    def saved(self, replica: str) -> tuple[str, int]:
        """(epoch, the replica's last update held by a checkpoint), checkpointing first if due."""
        if self.dirty and time.monotonic() >= self._next_checkpoint:
            self.checkpoint()
        return self.epoch, self.saved_upto.get(replica, 0)

    # -- updates -----------------------------------------------------------------------------------

    def apply(self, replica: str, seq: int, op: str, args: tuple[Any, ...]) -> None:
        """One logged update of `replica`, applied unless it was already."""
        if self.logs.setdefault(replica, _Log()).first_time(seq):
            self.dirty = True
            getattr(self, "_" + op)(*args)

    def replay(self, replica: str, ops: list[Op]) -> None:
        for seq, op, args in ops:
            self.apply(replica, seq, op, args)

    def push(self, program_id: str, thread: str, start_service: float, start_wait: float,
             service: float, wait: float, engine: int | None, owner: str | None = None) -> None:
        """One finished call of the program, unlogged (tests and tools)."""
        self._push(program_id, owner, thread, start_service, start_wait, service, wait, engine)

    def end(self, program_id: str) -> None:
        self._end(program_id)

    def _push(self, program_id: str, owner: str | None, thread: str, start_service: float,
              start_wait: float, service: float, wait: float, engine: int | None) -> None:
        now = time.monotonic()
        call = self.table.new_call(program_id, thread=thread, now=now)
        self.owners.setdefault(program_id, owner)
        call.start_service, call.start_wait = start_service, start_wait
        call.service, call.wait = service, wait
        self.table.finish_call(call, now)
        if call.program.engine is None:
            call.program.engine = engine

    def _end(self, program_id: str) -> None:
        if program_id in self.table:
            self.table.end(program_id)
        self.owners.pop(program_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + max(0.1, self.table.ttl / 10)
            for program_id in self.table.expire(now):
                self.owners.pop(program_id, None)
                self.dirty = True

    # -- checkpoints -------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        t0 = time.monotonic()
        programs = [(p.program_id, self.owners.get(p.program_id), p.service, p.wait, p.engine,
                     p.completed_calls, sorted(p.threads), t0 - p.created, t0 - p.last_arrival,
                     t0 - p.last_completion) for p in self.table.programs.values()]
        logs = {r: (log.upto, sorted(log.past)) for r, log in self.logs.items()}
        self.checkpoints.save(pickle.dumps({"wall": time.time(), "key": self.key, "programs": programs,
                                            "logs": logs}, protocol=pickle.HIGHEST_PROTOCOL))
        self.saved_upto = {r: log.upto for r, log in self.logs.items()}
        self.dirty = False
        self.checkpoint_cost = time.monotonic() - t0
        self._next_checkpoint = time.monotonic() + 10 * self.checkpoint_cost

    def _restore(self) -> None:
        blob = self.checkpoints.load()
        if not blob:
            return
        state = pickle.loads(blob)
        now = time.monotonic()
        shift = now - max(0.0, time.time() - state["wall"])  # the checkpoint's moment on this clock
        self.key = state["key"]
        for pid, owner, service, wait, engine, completed, threads, *ages in state["programs"]:
            program = self.table.start(pid, shift - ages[0])
            program.service, program.wait, program.engine = service, wait, engine
            program.completed_calls, program.threads = completed, set(threads)
            program.last_arrival, program.last_completion = shift - ages[1], shift - ages[2]
            self.owners[pid] = owner
        self.logs = {r: _Log(upto, set(past)) for r, (upto, past) in state["logs"].items()}
        self.saved_upto = {r: log.upto for r, log in self.logs.items()}
        self.recovering_until = time.monotonic() + RECOVERY_S


class MemoryCheckpoints:
    """Checkpoints kept in memory (tests: a store 'restarted' by building it again on the same one)."""

    def __init__(self) -> None:
        self.blob: bytes | None = None

    def load(self) -> bytes | None:
        return self.blob

    def save(self, blob: bytes) -> None:
        self.blob = blob

