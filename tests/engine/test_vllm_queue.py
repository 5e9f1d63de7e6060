"""LevelQueue: vLLM's RequestQueue interface, (priority, arrival) order, O(log n) re-prioritisation."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("vllm")

from autellix.engine.fake import make_request  # noqa: E402
from autellix.engine.vllm_queue import LevelQueue  # noqa: E402


def _req(priority: int, arrival: float):
    r = make_request(None, arrival=arrival)
    r.priority = priority
    return r


def test_order_matches_vllm_priority_queue():
    from vllm.v1.core.sched.request_queue import PriorityRequestQueue

    rng = random.Random(1)
    reqs = [_req(rng.randrange(4), rng.random()) for _ in range(300)]
    ours, theirs = LevelQueue(), PriorityRequestQueue()
    for r in reqs:
        ours.add_request(r)
        theirs.add_request(r)
    assert list(ours) == list(theirs)
    popped = [ours.pop_request() for _ in range(len(reqs))]
    assert popped == [theirs.pop_request() for _ in range(len(reqs))]
    assert not ours and len(ours) == 0
    with pytest.raises(IndexError):
        ours.peek_request()


def test_reprioritize_keeps_fcfs_place_and_survives_many_moves():
    rng = random.Random(2)
    q = LevelQueue()
    reqs = [_req(1, float(i)) for i in range(200)]
    q.prepend_requests(reqs)
    for _ in range(5000):  # move requests up and down many times: stale entries must never compare
        r = rng.choice(reqs)
        assert q.reprioritize(r, rng.randrange(3))
    assert len(q._heap) <= 2 * len(q) + 64 + 1
    expected = sorted(reqs, key=lambda r: (r.priority, r.arrival_time))
    assert list(q) == expected
    assert [q.pop_request() for _ in range(len(reqs))] == expected


def test_remove_and_membership():
    q = LevelQueue()
    a, b, c = _req(0, 1.0), _req(0, 2.0), _req(1, 0.5)
    for r in (a, b, c):
        q.add_request(r)
    q.remove_request(a)
    assert a not in q and len(q) == 2 and q.peek_request() is b
    q.remove_requests([a, c])  # a is no longer queued: ignored, as vLLM expects
    assert list(q) == [b]
    with pytest.raises(ValueError):
        q.remove_request(a)
    assert not q.reprioritize(a, 0)
    q.add_request(b)  # already queued: still one entry
    assert len(q) == 1 and q.pop_request() is b and not q


def test_rekey_reorders_runnable_and_parked_requests_alike():
    reqs = [_req(level, arrival) for level, arrival in ((2, 0.0), (0, 1.0), (1, 2.0))]
    q = LevelQueue()
    for r in reqs:
        q.add_request(r)
    assert list(q) == [reqs[1], reqs[2], reqs[0]]
    assert q.park(reqs[2])
    q.rekey(lambda r: (0, -r.arrival_time))  # one priority, latest arrival first
    assert list(q) == [reqs[1], reqs[0]] and [r.priority for r in reqs] == [0, 0, 0]
    q.unpark(reqs[2])
    assert [q.pop_request() for _ in range(3)] == [reqs[2], reqs[1], reqs[0]]
