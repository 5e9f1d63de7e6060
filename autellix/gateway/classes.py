"""A call's class, interactive or batch, read from what clients already send (docs/gateway.md,
"Classes"). Sources, first present wins:

1. header `x-autellix-class`: `interactive` or `batch` (any case);
2. Dynamo's `nvext.agent_hints.priority`, an integer; higher is more urgent in Dynamo's docs, so < 0 is
   batch and >= 0 interactive (`DYNAMO_HIGHER_IS_URGENT`: the one place that polarity is decided);
3. the body's `priority`, an integer as vLLM reads it (lower is served first, default 0): > 0 is batch,
   <= 0 interactive.

None of them: the call names no class (None), and its program keeps the one it had (programs start
interactive: autellix.programs.ProgramState.batch).
Invariants: every source present is checked, not only the winner; a bad value is a 400 naming the
field and the values it accepts. `drop_engine_fields` removes `priority` from every body sent to an
engine (vLLM refuses a non-zero one unless it runs `--scheduling-policy priority`); `nvext` stays
(vLLM ignores fields it does not know).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autellix.context import CLASS_HEADER, CLASS_VALUES
from autellix.gateway.errors import GatewayError

DYNAMO_HIGHER_IS_URGENT = True  # polarity: see docs/gateway.md
"""Dynamo's agent hints: a higher `priority` is more urgent (its docs, v1.2 on), the opposite of vLLM's.
False reads it as vLLM's `priority`."""
ENGINE_DROPPED = ("priority",)
"""Body fields read here and never sent to an engine."""


def _integer(value: object, field: str, meaning: str) -> int:
    """`value` if it is a JSON integer (not a bool, not a float such as 1.0), else 400 naming `field`
    and what its values mean."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise GatewayError(400, f"{field}: must be an integer ({meaning}), got {value!r:.40}", param=field)
    return value


def _object(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise GatewayError(400, f"{field}: must be an object, got {value!r:.40}", param=field)
    return value


def header_class(headers: Mapping[str, str]) -> bool | None:
    """The `x-autellix-class` header's class (None when absent); 400 unless a class name (CLASS_VALUES)."""
    value = headers.get(CLASS_HEADER)
    if value is None:
        return None
    batch = CLASS_VALUES.get(value.strip().lower())
    if batch is None:
        raise GatewayError(400, f"{CLASS_HEADER}: must be 'interactive' or 'batch', got {value!r:.40}",
                           param=CLASS_HEADER)
    return batch


def dynamo_batch(priority: int) -> bool:
    """Whether Dynamo's agent-hint `priority` marks a batch call (less urgent than normal, 0)."""
    return priority < 0 if DYNAMO_HIGHER_IS_URGENT else priority > 0


def _dynamo_meaning() -> str:
    return "< 0: batch, >= 0: interactive" if DYNAMO_HIGHER_IS_URGENT else "> 0: batch, <= 0: interactive"


def nvext_class(body: Mapping[str, Any]) -> bool | None:
    """The class of `nvext.agent_hints.priority` (None when any level is absent or null)."""
    nvext = body.get("nvext")
    if nvext is None:
        return None
    hints = _object(nvext, "nvext").get("agent_hints")
    if hints is None:
        return None
    priority = _object(hints, "nvext.agent_hints").get("priority")
    if priority is None:
        return None
    return dynamo_batch(_integer(priority, "nvext.agent_hints.priority", _dynamo_meaning()))


def priority_class(body: Mapping[str, Any]) -> bool | None:
    """The class of vLLM's `priority` body field (None when absent or null)."""
    priority = body.get("priority")
    return None if priority is None else _integer(priority, "priority", "> 0: batch, <= 0: interactive") > 0


def call_class(headers: Mapping[str, str], body: Mapping[str, Any]) -> bool | None:
    """The call's class (True: batch, False: interactive, None: not named) by the module doc's order;
    every source present is checked (400), whichever wins."""
    found = (header_class(headers), nvext_class(body), priority_class(body))
    return next((batch for batch in found if batch is not None), None)


def drop_engine_fields(body: dict[str, Any]) -> None:
    """Remove ENGINE_DROPPED from a body about to be sent to an engine (mutates it)."""
    for field in ENGINE_DROPPED:
        body.pop(field, None)
