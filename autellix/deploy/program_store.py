"""The process table shared by several gateway replicas (`autellix serve --ray`, docs/deploy.md).

Here, not in the gateway, because it is Ray machinery: the gateway only states what it needs from a
shared table (autellix.gateway.sessions.SharedTable) and runs without Ray; `SharedPrograms` is that
table's Ray implementation, made by `autellix serve --ray` (autellix.deploy.serve).

`ProgramStore` (a named, detached Ray actor, so it outlives any replica) holds the shared table:
each program's owner, service, wait and engine pin, kept by the same `ProcessTable` rule as one
gateway. A replica keeps its own table as a cache and talks to the store twice per call:
- before the call, `pull`: the program's service, wait and pin (awaited, bounded by `timeout`), which
  the replica's entry takes (max of both, so it never goes down), and the owner check;
- after it, `push`: the call's own contribution (its start snapshot, service, wait, engine), applied
  by the table's rule in the store. Pushing contributions rather than totals means two replicas
  serving one program at once never overwrite each other's increments.
Failure: when the store does not answer in time, the replica goes on with its own entry (the program
loses the history other replicas gave it, never the call), and says so in its log once a minute.
Invariant: the store's service and wait for a program never decrease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from autellix.gateway.sessions import Snapshot
from autellix.policy.config import PolicyConfig

log = logging.getLogger("autellix.gateway")
STORE_NAME = "autellix-programs"


class ProgramStore:
    """The shared table (wrapped with `ray.remote` by `connect`). Its clock is its own."""

    def __init__(self, policy: PolicyConfig) -> None:
        self.table = policy.new_table()
        self.owners: dict[str, str | None] = {}
        self._next_expiry = 0.0

    def pull(self, program_id: str, owner: str | None, create: bool) -> Snapshot | None:
        """The program's snapshot, opening it for `owner` when `create`; None when it is another
        owner's, or missing and not created."""
        self._expire()
        if self.owners.get(program_id, owner) != owner or (program_id not in self.table and not create):
            return None
        program = self.table.start(program_id, time.monotonic())
        self.owners.setdefault(program_id, owner)
        program.last_arrival = time.monotonic()
        return program.service, program.wait, program.engine, program.completed_calls

    def push(self, program_id: str, thread: str, start_service: float, start_wait: float,
             service: float, wait: float, engine: int | None) -> None:
        """One finished call of the program, replayed into the shared table by its rule."""
        now = time.monotonic()
        call = self.table.new_call(program_id, thread=thread, now=now)
        call.start_service, call.start_wait = start_service, start_wait
        call.service, call.wait = service, wait
        self.table.finish_call(call, now)
        if call.program.engine is None:
            call.program.engine = engine

    def end(self, program_id: str) -> None:
        if program_id in self.table:
            self.table.end(program_id)
        self.owners.pop(program_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + max(0.1, self.table.ttl / 10)
            for program_id in self.table.expire(now):
                self.owners.pop(program_id, None)


class SharedPrograms:
    """A replica's handle on the store (a SharedTable); never raises: an unreachable store means local
    state only."""

    def __init__(self, actor: Any, timeout: float = 1.0) -> None:
        self.actor = actor
        self.timeout = timeout
        self._warned = 0.0

    @classmethod
    def connect(cls, policy: PolicyConfig, timeout: float = 1.0) -> SharedPrograms:
        """The deployment's store (created by the first replica, found by the others)."""
        import ray

        actor = ray.remote(ProgramStore).options(
            name=STORE_NAME, get_if_exists=True, lifetime="detached", num_cpus=0,
            max_restarts=-1).remote(policy)
        return cls(actor, timeout)

    async def pull(self, program_id: str, owner: str | None, create: bool = True) -> Snapshot | None | bool:
        """The store's snapshot, None (another owner's / missing), or False when the store is down."""
        try:
            return await asyncio.wait_for(self.actor.pull.remote(program_id, owner, create), self.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure of the store degrades to local state
            self._warn(exc)
            return False

    def push(self, program_id: str, thread: str, start_service: float, start_wait: float,
             service: float, wait: float, engine: int | None) -> None:
        try:
            self.actor.push.remote(program_id, thread, start_service, start_wait, service, wait, engine)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def end(self, program_id: str) -> None:
        try:
            self.actor.end.remote(program_id)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("shared program store unavailable (%s: %s); serving from this replica's own "
                        "table meanwhile", type(exc).__name__, exc)
