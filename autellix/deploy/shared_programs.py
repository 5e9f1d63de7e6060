"""A gateway replica's handle on the deployment's ProgramStore actor: the Ray implementation of
autellix.gateway.sessions.SharedTable (autellix.deploy.program_store has the design).

Invariants:
- Every update (a finished call, a program's end) gets the next seq of this replica and stays in
  `unsaved` until the store says a checkpoint holds it; `unsaved` is replayed, in seq order, to every
  new incarnation of the store before this replica takes its epoch as known.
- Never raises into the gateway: an unreachable store means local state only (logged once a minute).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from autellix.deploy.program_store import STORE_NAME, Op, ProgramStore
from autellix.gateway.auth import Owner
from autellix.gateway.conversations import Entry, Query
from autellix.gateway.sessions import Snapshot
from autellix.policy.config import PolicyConfig

log = logging.getLogger("autellix.gateway")
MAX_UNSAVED = 1_000_000
"""Updates kept for replay while the store saves nothing (oldest dropped past it, with a warning)."""
LINKS_PER_CALL = 20_000


class SharedPrograms:
    """A replica's handle on the store (a SharedTable)."""

    def __init__(self, actor: Any, hash_key: bytes, epoch: str | None, timeout: float = 1.0,
                 sync_s: float = 0.05) -> None:
        self.actor = actor
        self.hash_key = hash_key
        self.epoch = epoch
        """The store incarnation this replica's updates went to (None: not known yet)."""
        self.timeout = timeout
        self.sync_s = sync_s
        self.replica = uuid.uuid4().hex
        self.seq = 0
        self.unsaved: OrderedDict[int, tuple[str, tuple[Any, ...]]] = OrderedDict()
        self._lock = threading.Lock()
        self._learned: Any = None
        """The ObjectRef of the last `learn` sent."""
        self.replays = 0
        """Store restarts this replica replayed its updates to."""
        self._warned = 0.0

    @classmethod
    def connect(cls, policy: PolicyConfig, timeout: float = 1.0, sync_s: float = 0.05) -> SharedPrograms:
        """The deployment's store (created by the first replica, found by the others)."""
        import ray

        actor = ray.remote(ProgramStore).options(
            name=STORE_NAME, get_if_exists=True, lifetime="detached", num_cpus=0,
            max_restarts=-1).remote(policy)
        key, epoch = ray.get(actor.hello.remote(), timeout=120)
        return cls(actor, key, epoch, timeout, sync_s)

    # -- SharedTable -------------------------------------------------------------------------------

    async def pull(self, program_id: str, owner: Owner, create: bool = True) -> Snapshot | None | bool:
        """The store's snapshot, None (another owner's / missing), or False when the store is down."""
        try:
            return await asyncio.wait_for(self.actor.pull.remote(program_id, owner, create), self.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure of the store degrades to local state
            self._warn(exc)
            return False

    async def match(self, query: Query) -> tuple[str, str, str] | None:
        try:
            return await asyncio.wait_for(self.actor.match.remote(query), self.timeout)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
            return None

    def publish(self, links: list[Entry]) -> None:
        try:
            self._learned = self.actor.learn.remote(links)
        except Exception as exc:  # noqa: BLE001 - the links are republished when the store is back
            self._warn(exc)

    async def settled(self) -> None:
        """The store ran this replica's last `learn` (so all before it: one caller's tasks run in
        order on the actor); at most `timeout`."""
        learned = self._learned
        if learned is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(learned), self.timeout)
        except Exception as exc:  # noqa: BLE001 - the store is down: the links are republished later
            self._warn(exc)

    def push(self, program_id: str, owner: Owner, thread: str, start_service: float, start_wait: float,
             service: float, wait: float, engine: int | None) -> None:
        self._update("push", (program_id, owner, thread, start_service, start_wait, service, wait, engine))

    def end(self, program_id: str) -> None:
        self._update("end", (program_id,))

    async def run(self, links: Callable[[], list[Entry]] | None = None) -> None:
        """Every `sync_s`: drop the updates a checkpoint holds; replay the others (and republish this
        replica's conversation links) to a new incarnation of the store."""
        while True:
            await asyncio.sleep(self.sync_s)
            try:
                await self.sync(links)
            except Exception as exc:  # noqa: BLE001 - the store is down or restarting: next round
                self._warn(exc)

    # -- durability --------------------------------------------------------------------------------

    def _update(self, op: str, args: tuple[Any, ...]) -> None:
        with self._lock:  # one handle may serve several event loops (in-process replicas in tests)
            self.seq += 1
            seq = self.seq
            self.unsaved[seq] = (op, args)
            if len(self.unsaved) > MAX_UNSAVED:
                self.unsaved.popitem(last=False)
                self._warn(RuntimeError(f"more than {MAX_UNSAVED} updates unsaved; the oldest dropped"))
        try:
            self.actor.apply.remote(self.replica, seq, op, args)
        except Exception as exc:  # noqa: BLE001 - kept in `unsaved`: replayed when the store is back
            self._warn(exc)

    async def sync(self, links: Callable[[], list[Entry]] | None = None) -> None:
        """One round of `run` (raises when the store does not answer)."""
        epoch, saved = await asyncio.wait_for(self.actor.saved.remote(self.replica), self.timeout)
        with self._lock:
            while self.unsaved and next(iter(self.unsaved)) <= saved:
                self.unsaved.popitem(last=False)
            if epoch == self.epoch:
                return
            ops: list[Op] = [(seq, op, args) for seq, (op, args) in self.unsaved.items()]
        await asyncio.wait_for(self.actor.replay.remote(self.replica, ops), self.timeout * 10)
        known = links() if links is not None else []
        for i in range(0, len(known), LINKS_PER_CALL):
            await asyncio.wait_for(self.actor.learn.remote(known[i:i + LINKS_PER_CALL]), self.timeout * 10)
        if self.epoch is not None:
            self.replays += 1
            log.warning("shared program store restarted: replayed %d update(s) and %d conversation link(s)",
                        len(ops), len(known))
        self.epoch = epoch

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("shared program store unavailable (%s: %s); serving from this replica's own "
                        "table meanwhile", type(exc).__name__, exc)
