"""Sessions: ownership, the max rule through usage, anonymous programs and TTL expiry (fake clock)."""

from __future__ import annotations

import pytest

from autellix.gateway.api import Usage
from autellix.gateway.identity import Identity
from autellix.gateway.sessions import ProgramIdTaken, Sessions
from autellix.policy.config import PolicyConfig
from autellix.programs import UnknownProgram


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


Ended = list[tuple[str, str]]


def make(ttl: float = 10.0, policy: PolicyConfig | None = None) -> tuple[Sessions, Clock, Ended]:
    clock, ended = Clock(), []
    policy = (policy or PolicyConfig()).replace(table_ttl=ttl)
    sessions = Sessions(policy, on_end=lambda p, how: ended.append((p.program_id, how)), clock=clock)
    return sessions, clock, ended


def test_owner_isolation() -> None:
    s, _, _ = make()
    p = s.create("alice", "p1")
    assert s.lookup("p1", "alice") is p
    for act in (lambda: s.lookup("p1", "bob"), lambda: s.end("p1", "bob"),
                lambda: s.begin_call(Identity("p1", "0", "header"), "bob", 0)):
        with pytest.raises(UnknownProgram):
            act()
    with pytest.raises(ProgramIdTaken):
        s.create("bob", "p1")
    assert s.create("alice", "p1") is p  # idempotent for the owner
    s.end("p1", "alice")
    with pytest.raises(UnknownProgram):
        s.lookup("p1", "alice")
    assert not s.owners


@pytest.mark.parametrize("rule, service, wait", [("total", 30 + 50 + 0.5 * 40, 2),
                                                  ("critical_path", 50 + 0.25 * 40, 2)])
def test_parallel_threads_add_up_by_the_policys_rule(rule: str, service: float, wait: float) -> None:
    s, _, _ = make(policy=PolicyConfig(service_rule=rule))
    a = s.begin_call(Identity("p", "a", "header"), None, 10)
    b = s.begin_call(Identity("p", "b", "header"), None, 10)
    s.finish_call(a, Usage(prompt_tokens=40, completion_tokens=30), wait_steps=2)
    s.finish_call(b, Usage(prompt_tokens=40, completion_tokens=50), wait_steps=1)
    program = s.lookup("p", None)
    assert (program.service, program.wait) == (service, wait)
    c = s.begin_call(Identity("p", "a", "header"), None, 10)
    assert c.start_service == program.service
    s.finish_call(c, Usage(completion_tokens=5), wait_steps=0)
    assert program.service == service + 5  # sequential: the running sum under either rule


def test_anonymous_program_is_dropped_after_its_call() -> None:
    s, _, ended = make()
    call = s.begin_call(Identity(None, "0", "anonymous"), "k", 3)
    assert len(s) == 1
    s.finish_call(call, None, 0)
    assert len(s) == 0 and not s.owners and ended[-1][1] == "anonymous"


def test_ttl_expiry_skips_active_programs() -> None:
    s, clock, ended = make(ttl=10)
    s.create(None, "idle")
    busy = s.begin_call(Identity("busy", "0", "header"), None, 0)
    clock.t += 11
    assert s.expire() == ["idle"]
    assert ended == [("idle", "expired")] and "idle" not in s.owners
    s.finish_call(busy, Usage(completion_tokens=1), 0)
    clock.t += 5
    assert s.expire() == []
    clock.t += 6
    assert s.expire() == ["busy"] and len(s) == 0 and not s.owners


def test_level_of_uses_policy_boundaries() -> None:
    s, _, _ = make()
    assert [s.policy.level_of(x) for x in (0, 255, 256, 600, 1e9)] == [0, 0, 1, 2, 7]
