"""Process table: both service rules, snapshots, TTL expiry and input validation."""

from __future__ import annotations

import math

import pytest

from autellix.programs import ProcessTable, UnknownProgram


def test_sequential_calls_sum_service_and_wait():
    table = ProcessTable()
    for service, wait in ((10, 2), (5, 1)):
        call = table.new_call("p", prompt_tokens=3)
        call.service, call.wait = service, wait
        table.finish_call(call, now=1.0)
    p = table.get("p")
    assert (p.service, p.wait, p.completed_calls, p.calls) == (15, 3, 2, {})


@pytest.mark.parametrize("rule, service, wait", [("total", 15, 3), ("critical_path", 9, 3)])
def test_parallel_calls_add_up_by_the_tables_rule(rule: str, service: float, wait: float) -> None:
    table = ProcessTable(rule=rule)
    calls = [table.new_call("p", thread=str(i)) for i in range(3)]
    for call, s, w in zip(calls, (4, 9, 2), (1, 2, 3)):
        call.service, call.wait = s, w
        table.finish_call(call)
    p = table.get("p")
    # service: the sum (total) or the longest chain (critical path); wait: the longest chain under both
    assert (p.service, p.wait) == (service, wait)
    assert p.is_parallel


def test_unknown_service_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="rule"):
        ProcessTable(rule="sum")


def test_gateway_snapshot_raises_but_never_lowers_service():
    table = ProcessTable()
    assert table.new_call("p", service=50.0, wait=7.0).start_service == 50.0
    assert table.new_call("p", service=10.0).start_service == 50.0
    assert table.get("p").wait == 7.0


def test_ttl_expiry_drops_only_idle_programs():
    table = ProcessTable(ttl=10)
    table.start("idle", now=0)
    busy = table.new_call("busy", now=0)
    table.start("recent", now=5)
    assert table.expire(now=10) == ["idle"]
    assert "busy" in table and "recent" in table
    table.finish_call(busy, now=12)
    assert sorted(table.expire(now=22)) == ["busy", "recent"]
    assert len(table) == 0


def test_anonymous_program_disappears_with_its_call():
    table = ProcessTable()
    call = table.new_call(None)
    assert call.program_id in table
    table.finish_call(call)
    assert len(table) == 0


def test_unknown_program_and_end():
    table = ProcessTable()
    with pytest.raises(UnknownProgram, match="'nope'"):
        table.get("nope")
    call = table.new_call("p")
    table.end("p")
    table.finish_call(call)  # a call outliving its ended program touches nothing
    assert "p" not in table
    with pytest.raises(UnknownProgram):
        table.end("p")


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt_tokens": -1}, "prompt_tokens"),
    ({"prompt_tokens": 2.5}, "prompt_tokens"),
    ({"service": -3}, "service"),
    ({"service": math.nan}, "service"),
    ({"wait": "7"}, "wait"),
    ({"call_id": ""}, "call_id"),
])
def test_bad_input_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ProcessTable().new_call("p", **kwargs)


def test_duplicate_active_call_id_and_bad_ttl():
    table = ProcessTable()
    table.new_call("p", call_id="c1")
    with pytest.raises(ValueError, match="already active"):
        table.new_call("p", call_id="c1")
    with pytest.raises(ValueError, match="ttl"):
        ProcessTable(ttl=0)
