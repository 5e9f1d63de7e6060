"""The shared process table of gateway replicas: ProgramStore's rules (pure), its restart from a
checkpoint with the replicas' unsaved updates replayed (FAKE actor handles over in-process stores:
the real processes are in test_store_restart.py), and a replica whose store is down (a FAKE store that
fails every call, isolating the degrade path) still serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from fake_engine import FakeEngine, ServerThread

from autellix.deploy.program_store import MemoryCheckpoints, ProgramStore
from autellix.deploy.shared_programs import SharedPrograms
from autellix.gateway import GatewayConfig, create_app
from autellix.gateway.conversations import ConversationIndex
from autellix.gateway.sessions import Sessions
from autellix.policy.config import PolicyConfig


def test_contributions_of_two_replicas_add_up_by_the_tables_rule() -> None:
    store = ProgramStore(PolicyConfig(), MemoryCheckpoints())
    assert store.pull("p", "alice", create=True) == (0.0, 0.0, None, 0)
    # Two replicas ran a call each from the same snapshot (service 0): neither increment is lost.
    store.push("p", "0", 0.0, 0.0, 10.0, 2.0, 1)
    store.push("p", "0", 0.0, 0.0, 5.0, 1.0, 0)
    assert store.pull("p", "alice", create=True) == (15.0, 2.0, 1, 2)  # the first pin stays
    assert store.pull("p", "bob", create=True) is None  # another key's program
    assert store.pull("q", "alice", create=False) is None  # missing, not created by a read
    critical = ProgramStore(PolicyConfig(service_rule="critical_path"), MemoryCheckpoints())
    critical.pull("t", None, create=True)
    critical.push("t", "0", 0.0, 0.0, 10.0, 0.0, None)
    critical.push("t", "1", 0.0, 0.0, 4.0, 0.0, None)  # a parallel branch: the longer chain counts
    assert critical.pull("t", None, create=True)[0] == 10.0
    store.end("p")
    assert store.pull("p", "bob", create=True) == (0.0, 0.0, None, 0)  # ended: the id is free again


def test_a_replica_takes_the_shared_entry_and_never_lowers_its_own() -> None:
    handle = Handle(ProgramStore(PolicyConfig(), MemoryCheckpoints()))
    handle.store.pull("p", None, create=True)
    handle.store.push("p", "0", 0.0, 0.0, 40.0, 3.0, 1)
    sessions = Sessions(PolicyConfig(), shared=SharedPrograms(handle, b"k" * 16, None))
    asyncio.run(sessions.pull("p", None))
    program = sessions.table.get("p")
    assert (program.service, program.wait, program.engine, program.completed_calls) == (40.0, 3.0, 1, 1)
    program.service = 99.0  # ahead of the store (its own push not applied yet): kept
    asyncio.run(sessions.pull("p", None))
    assert program.service == 99.0


class Handle:
    """FAKE actor handle: answers like a Ray actor, from an in-process ProgramStore (swappable: a
    'restart' puts a new store, built from the same checkpoints, behind the same handle)."""

    def __init__(self, store: ProgramStore) -> None:
        self.store = store
        self.down = False

    def __getattr__(self, name: str) -> _Method:
        def call(*args: Any) -> Any:
            if self.down:
                raise ConnectionError("the store is restarting")
            return getattr(self.store, name)(*args)

        return _Method(call)


def test_a_restarted_store_loses_no_update_of_a_live_replica_and_applies_none_twice() -> None:
    saved = MemoryCheckpoints()
    handle = Handle(ProgramStore(PolicyConfig(), saved))
    a, b = (SharedPrograms(handle, handle.store.key, handle.store.epoch) for _ in range(2))

    async def run() -> None:
        for _ in range(3):  # checkpointed: held by the store's checkpoint, dropped by the replicas
            a.push("p", "alice", "0", 0.0, 0.0, 1.0, 0.0, 0)
            b.push("p", "alice", "0", 0.0, 0.0, 1.0, 0.0, 0)
        await a.sync()
        await b.sync()
        assert not a.unsaved and not b.unsaved
        a.push("p", "alice", "0", 0.0, 0.0, 1.0, 0.0, 0)  # applied, not checkpointed: lost by the death
        handle.down = True
        b.push("p", "alice", "0", 0.0, 0.0, 1.0, 0.0, 0)  # sent while the store was down: never applied
        old_key = handle.store.key
        handle.store, handle.down = ProgramStore(PolicyConfig(), saved), False  # Ray's restart
        assert handle.store.key == old_key  # the conversation keys stay valid
        assert handle.store.pull("p", "alice", create=False)[3] == 6  # the checkpoint's entry
        assert handle.store.pull("q", "alice", create=False) is False  # unknown yet, not missing
        a.push("p", "alice", "0", 0.0, 0.0, 1.0, 0.0, 0)  # reaches the new store before any replay
        await a.sync()
        await b.sync()
        await a.sync()  # a replay is idempotent
        assert a.replays == b.replays == 1

    asyncio.run(run())
    assert handle.store.pull("p", "alice", create=False) == (9.0, 0.0, 0, 9)  # every call, once
    assert handle.store.pull("p", "bob", create=False) is None  # the owner came back too


class _Method:
    """`handle.method.remote(...)` as Ray has it: runs at once, returns an awaitable of the result."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.fn(*args))
        return future


class DeadStore:
    """FAKE actor handle of a store that is down: every call fails."""

    def __getattr__(self, name: str) -> DeadStore:
        return self

    def remote(self, *args: object) -> None:
        raise ConnectionError("store is down")


def test_a_replica_whose_store_is_down_still_serves_from_its_own_table() -> None:
    engine = ServerThread(FakeEngine().app).start()
    app = create_app(GatewayConfig(engines=(engine.url,), health_interval=0.2),
                     shared=SharedPrograms(DeadStore(), b"k" * 16, None, timeout=0.2))
    gateway = ServerThread(app).start()
    try:
        with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client:
            for _ in range(2):
                r = client.post("/v1/completions", headers={"X-Program-ID": "p"},
                                json={"model": "m", "prompt": "hi", "max_tokens": 3})
                assert r.status_code == 200
            entry = client.get("/v1/programs/p").json()
            assert entry["completed_calls"] == 2 and entry["service"] > 0
            assert client.get("/v1/programs/never-seen-here").status_code == 503  # maybe another's
    finally:
        gateway.stop()
        engine.stop()


def test_a_conversation_one_replica_saw_is_placed_for_another_by_the_stores_index() -> None:
    store = ProgramStore(PolicyConfig(), MemoryCheckpoints())
    a, b = (ConversationIndex(60, key=store.key, publish=store.learn) for _ in range(2))
    history = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "task"}]
    first = a.infer_chat("alice", history)
    a.replied(first, [{"role": "assistant", "content": "plan"}])
    history += [{"role": "assistant", "content": "plan"}, {"role": "user", "content": "go"}]
    on_b = b.infer_chat("alice", history)  # b never saw it: it would open a new program
    assert on_b.how == "new" and on_b.query is not None
    assert store.match(on_b.query) == (first.program_id, "0", "extends")
    assert store.match(b.infer_chat("bob", history).query) is None  # another owner's: never linked
    prompt = "x" * 3000
    text = a.infer_text("alice", prompt)
    a.replied(text, [" and more"])
    on_b = b.infer_text("alice", prompt + " and more, then")
    assert store.match(on_b.query) == (text.program_id, "0", "extends")
