"""Sessions: the gateway's global process table plus ownership, call accounting and TTL expiry.

Invariants:
- Every program in the table has an entry in `owners` and vice versa (both change together).
- A program is visible only to its owner (autellix.gateway.auth): `lookup` answers UnknownProgram for
  another owner's program exactly as for a missing one.
- Every call opened by `begin_call` is closed by exactly one `finish_call` (the proxy guarantees it with
  `finally`), so `ProgramState.calls` cannot leak and TTL expiry (which skips programs with active calls)
  eventually drops every idle program.
- Service and wait reach the table only through ProcessTable.finish_call (the policy's service rule).
- With `shared` (a SharedTable: several gateway replicas, autellix.deploy.program_store on Ray), this
  table is the replica's
  cache: `pull` before a call takes the shared entry's service, wait and pin (never lowering its own),
  and every finished call is pushed to the shared table as well.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from autellix.context import class_name
from autellix.gateway.api import Usage
from autellix.gateway.auth import Owner
from autellix.gateway.conversations import Entry, Query
from autellix.gateway.errors import GatewayError
from autellix.gateway.identity import Identity
from autellix.policy.config import PolicyConfig
from autellix.programs import Call, ProgramState, UnknownProgram

ProgramEnded = Callable[[ProgramState, str], None]
"""Hook called with (program, how) when a program leaves the table: "ended", "expired", "anonymous"."""


Snapshot = tuple[float, float, int | None, int]
"""(service, wait, engine pin, completed calls) of one program in a shared table."""


class SharedTable(Protocol):
    """The process table several gateway replicas share (implemented on Ray by
    autellix.deploy.program_store.SharedPrograms), and the shared copy of their conversation indexes
    (autellix.gateway.conversations). Never raises: an unavailable table degrades to the replica's own
    entries and index."""

    hash_key: bytes
    """The deployment's conversation-hash key (every replica's index uses it, so keys agree)."""

    async def run(self, links: Callable[[], list[Entry]] | None = None) -> None:
        """Background upkeep while the gateway serves (runs until cancelled); `links`: this replica's
        conversation links, republished when the shared index lost them."""
        ...

    async def match(self, query: Query) -> tuple[str, str, str] | None:
        """(program, thread, how) of the shared index for a call the replica could not place; None
        when it places it nowhere either, or is unavailable."""
        ...

    def publish(self, links: list[Entry]) -> None:
        """A finished call's conversation links, for the shared index."""
        ...

    async def settled(self) -> None:
        """Wait (bounded) until the links published so far are in the shared index."""
        ...

    async def pull(self, program_id: str, owner: Owner, create: bool = True) -> Snapshot | None | bool:
        """The program's snapshot (opened for `owner` when `create`); None when it is another owner's
        or missing; False when the shared table is unavailable."""
        ...

    def push(self, program_id: str, owner: Owner, thread: str, start_service: float, start_wait: float,
             service: float, wait: float, engine: int | None) -> None:
        """One finished call's contribution (applied by the table's own rule)."""
        ...

    def end(self, program_id: str) -> None: ...


class ProgramIdTaken(ValueError):
    """POST /v1/programs with an id that another owner already uses."""


class Sessions:
    def __init__(self, policy: PolicyConfig, on_end: ProgramEnded | None = None,
                 clock: Callable[[], float] = time.monotonic, shared: SharedTable | None = None) -> None:
        self.policy = policy
        self.shared = shared
        self.table = policy.new_table()
        self.owners: dict[str, Owner] = {}
        self.sources: dict[str, str] = {}
        """program id -> how the gateway first recognised it (created, header, body, session)."""
        self.parents: dict[str, dict[str, str]] = {}
        """program id -> {thread: the thread that started it} (subagents, as their clients name them)."""
        self.on_end = on_end
        self.clock = clock
        # Monotonic -> wall clock, for timestamps shown to clients.
        self._wall_offset = time.time() - clock()

    def __len__(self) -> int:
        return len(self.table)

    # -- programs ----------------------------------------------------------------------------------

    def create(self, owner: Owner, program_id: str | None = None) -> ProgramState:
        """Open a program (a random id when none given). Re-opening your own id is idempotent."""
        if program_id is not None and program_id in self.table and self.owners.get(program_id) != owner:
            raise ProgramIdTaken(f"program id {program_id!r} is already in use")
        program = self.table.start(program_id, self.clock())
        self.owners.setdefault(program.program_id, owner)
        self.sources.setdefault(program.program_id, "created")
        return program

    def lookup(self, program_id: str, owner: Owner) -> ProgramState:
        program = self.table.get(program_id)
        if self.owners.get(program_id) != owner:
            raise UnknownProgram(program_id)
        return program

    async def pull(self, program_id: str | None, owner: Owner, create: bool = True) -> None:
        """Take the shared entry of `program_id` (no-op without `shared`); UnknownProgram when it is
        another owner's (or missing and not `create`d). An unavailable store changes nothing, except
        that a read (not `create`) of a program this replica has not seen answers 503, not 404."""
        if self.shared is None or program_id is None:
            return
        snap = await self.shared.pull(program_id, owner, create)
        if snap is False:
            if not create and program_id not in self.table:  # maybe another replica's: not known now
                raise GatewayError(503, f"program {program_id!r}: the shared process table is unavailable "
                                        "and this replica has not seen it; retry")
            return
        if snap is None:
            raise UnknownProgram(program_id)
        service, wait, engine, completed = snap
        if program_id not in self.table and not create:  # known here only from another replica
            self.sources.setdefault(program_id, "shared")
        program = self.table.start(program_id, self.clock())
        self.owners.setdefault(program_id, owner)
        program.service, program.wait = max(program.service, service), max(program.wait, wait)
        program.completed_calls = max(program.completed_calls, completed)
        if engine is not None:
            program.engine = engine

    def end(self, program_id: str, owner: Owner) -> ProgramState:
        program = self.lookup(program_id, owner)
        if self.shared is not None:
            self.shared.end(program_id)
        self.table.end(program_id)
        del self.owners[program_id]
        self._ended(program, "ended")
        return program

    def expire(self) -> list[str]:
        """Drop programs idle for the TTL (ProcessTable.expire skips those with active calls)."""
        now = self.clock()
        cutoff = now - self.table.ttl
        # Same predicate as ProcessTable.expire, evaluated first to keep the ProgramState objects for hooks.
        idle = [p for p in self.table.programs.values() if not p.calls and p.last_activity() <= cutoff]
        ids = self.table.expire(now)
        gone = set(ids)
        for program in idle:
            if program.program_id in gone:
                self.owners.pop(program.program_id, None)
                self._ended(program, "expired")
        return ids

    async def run_expiry_loop(self) -> None:
        """Expire idle programs about ten times per TTL (at least every 30 s, at most every 0.1 s)."""
        period = min(30.0, max(0.1, self.table.ttl / 10))
        while True:
            await asyncio.sleep(period)
            self.expire()

    def _ended(self, program: ProgramState, how: str) -> None:
        self.sources.pop(program.program_id, None)
        self.parents.pop(program.program_id, None)
        if self.on_end is not None:
            self.on_end(program, how)

    # -- calls -------------------------------------------------------------------------------------

    def begin_call(self, identity: Identity, owner: Owner, prompt_tokens: int,
                   batch: bool | None = None) -> Call:
        """Register an arriving call. An unseen program id opens that program for this owner. `batch`:
        the class the call names (autellix.gateway.classes), which its program takes; None leaves it."""
        pid = identity.program_id
        if pid is not None and pid in self.table and self.owners.get(pid) != owner:
            raise UnknownProgram(pid)
        call = self.table.new_call(pid, thread=identity.thread_id, prompt_tokens=prompt_tokens,
                                   now=self.clock(), batch=batch)
        self.owners.setdefault(call.program.program_id, owner)
        if not call.program.ephemeral:
            self.sources.setdefault(call.program.program_id, identity.source)
            if identity.parent is not None and identity.parent != call.thread:
                self.parents.setdefault(call.program.program_id, {})[call.thread] = identity.parent
        return call

    def finish_call(self, call: Call, usage: Usage | None, wait_steps: float) -> None:
        """Charge the call's service (from the engine's usage, by the policy's formula: the one place
        a gateway call's service is computed; read it back as `call.service`) and wait, then apply the
        table's service rule."""
        if usage is not None:
            call.service = usage.service(self.policy)
        call.wait = wait_steps
        program = call.program
        self.table.finish_call(call, self.clock())
        if self.shared is not None and not program.ephemeral:
            self.shared.push(program.program_id, self.owners.get(program.program_id), call.thread,
                             call.start_service, call.start_wait, call.service, call.wait, program.engine)
        if program.ephemeral and not program.calls:
            self.owners.pop(program.program_id, None)
            self._ended(program, "anonymous")

    # -- views -------------------------------------------------------------------------------------

    def wall(self, t: float) -> float | None:
        return None if t == float("-inf") else round(t + self._wall_offset, 3)

    def listing(self, owner: Owner, after: str | None, limit: int) -> tuple[list[ProgramState], bool]:
        """The owner's live named programs in id order, the first `limit` after the id `after`; and
        whether more follow."""
        ids = sorted(pid for pid, o in self.owners.items()
                     if o == owner and (after is None or pid > after) and pid in self.sources)
        return [self.table.get(pid) for pid in ids[:limit]], len(ids) > limit

    def describe(self, program: ProgramState, engine_names: list[str]) -> dict[str, Any]:
        """The program's process-table entry as JSON (GET /v1/programs/{id})."""
        now = self.clock()
        return {
            "id": program.program_id,
            "object": "program",
            "source": self.sources.get(program.program_id, "anonymous"),
            "class": class_name(program.batch),
            "created": self.wall(program.created),
            "service": program.service,
            "wait": program.wait,
            "level": self.policy.level_of(program.service),
            "engine": None if program.engine is None else engine_names[program.engine],
            "threads": sorted(program.threads),
            "thread_parents": dict(sorted(self.parents.get(program.program_id, {}).items())),
            "completed_calls": program.completed_calls,
            "active_calls": [
                {"id": c.call_id, "thread": c.thread, "start_service": c.start_service,
                 "age": round(now - c.arrival, 3)} for c in program.calls.values()],
            "last_arrival": self.wall(program.last_arrival),
            "last_completion": self.wall(program.last_completion),
            "expires_in": None if program.calls else
            round(max(0.0, program.last_activity() + self.table.ttl - now), 3),
        }
