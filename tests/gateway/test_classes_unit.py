"""A call's class from its header, Dynamo's agent hints and vLLM's `priority` (autellix.gateway.classes):
each source, their order, the polarity switch, and the 400s (field and accepted values named)."""

from __future__ import annotations

from typing import Any

import pytest

from autellix.gateway import classes
from autellix.gateway.classes import call_class, drop_engine_fields
from autellix.gateway.errors import GatewayError


def hints(priority: object) -> dict[str, Any]:
    return {"nvext": {"agent_hints": {"priority": priority}}}


@pytest.mark.parametrize("value, batch", [("batch", True), ("interactive", False), ("BATCH", True),
                                          (" Interactive ", False)])
def test_header_names_the_class_in_any_case(value: str, batch: bool) -> None:
    assert call_class({"x-autellix-class": value}, {}) is batch


@pytest.mark.parametrize("body, batch", [({"priority": 1}, True), ({"priority": 10**20}, True),
                                         ({"priority": 0}, False), ({"priority": -5}, False),
                                         ({"priority": None}, None), ({}, None)])
def test_vllm_priority_above_zero_is_batch(body: dict[str, Any], batch: bool | None) -> None:
    assert call_class({}, body) is batch


@pytest.mark.parametrize("priority, batch", [(-1, True), (0, False), (5, False), (None, None)])
def test_dynamo_hint_higher_is_more_urgent(priority: object, batch: bool | None) -> None:
    assert call_class({}, hints(priority)) is batch


def test_dynamo_polarity_flips_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classes, "DYNAMO_HIGHER_IS_URGENT", False)
    assert [call_class({}, hints(p)) for p in (-1, 0, 5)] == [False, False, True]
    with pytest.raises(GatewayError, match=r"> 0: batch"):
        call_class({}, hints("5"))


@pytest.mark.parametrize("body", [{"nvext": None}, {"nvext": {}}, {"nvext": {"agent_hints": None}},
                                  {"nvext": {"agent_hints": {"osl": 100}}}, {"nvext": {"other": 1}}])
def test_nvext_without_a_priority_names_no_class(body: dict[str, Any]) -> None:
    assert call_class({}, body) is None


@pytest.mark.parametrize("headers, body, batch", [
    ({"x-autellix-class": "interactive"}, {**hints(-1), "priority": 5}, False),  # header first
    ({"x-autellix-class": "batch"}, {**hints(3), "priority": -1}, True),
    ({}, {**hints(0), "priority": 5}, False),  # the hint before vLLM's priority
    ({}, {**hints(-2), "priority": 0}, True),
    ({}, {"nvext": {"agent_hints": {}}, "priority": 2}, True),  # a hint without priority: the next source
])
def test_sources_in_order(headers: dict[str, str], body: dict[str, Any], batch: bool) -> None:
    assert call_class(headers, body) is batch


@pytest.mark.parametrize("headers, body, field, words", [
    ({"x-autellix-class": "low"}, {}, "x-autellix-class", ("interactive", "batch")),
    ({"x-autellix-class": ""}, {}, "x-autellix-class", ("interactive", "batch")),
    ({}, {"priority": True}, "priority", ("integer",)),
    ({}, {"priority": 1.0}, "priority", ("integer",)),
    ({}, {"priority": "1"}, "priority", ("integer",)),
    ({}, {"nvext": "x"}, "nvext", ("object",)),
    ({}, {"nvext": {"agent_hints": [1]}}, "nvext.agent_hints", ("object",)),
    ({}, hints(1.5), "nvext.agent_hints.priority", ("integer",)),
    ({}, hints(False), "nvext.agent_hints.priority", ("integer",)),
    ({"x-autellix-class": "batch"}, {"priority": "high"}, "priority", ("integer",)),  # checked though it lost
])
def test_bad_values_are_400_naming_field_and_values(headers: dict[str, str], body: dict[str, Any],
                                                     field: str, words: tuple[str, ...]) -> None:
    with pytest.raises(GatewayError) as err:
        call_class(headers, body)
    assert err.value.status == 400 and err.value.param == field
    assert err.value.message.startswith(f"{field}: must be")
    assert all(word in err.value.message for word in words)


def test_priority_is_dropped_before_the_engine_and_nvext_kept() -> None:
    body = {"model": "m", "priority": 3, **hints(-1)}
    drop_engine_fields(body)
    assert body == {"model": "m", **hints(-1)}
