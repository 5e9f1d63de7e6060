"""The program context a call carries to an engine: vLLM's `vllm_xargs` wire format
(docs/gateway.md, 'What the engine receives').

A request body's `vllm_xargs` reaches vLLM's scheduler as `sampling_params.extra_args`. Autellix puts
four fields there: `autellix_program` (program id), `autellix_thread`, and `autellix_service` /
`autellix_wait` (a gateway's snapshots of the program's service and wait when the call arrived).
A fifth, `autellix_class` (`"batch"` or `"interactive"`), is the class the call names for its program
(omitted when it names none: the program keeps its class; `ProgramContext.batch` is then None).
Another, `autellix_end` (true), marks a *program-end notice*: the engine releases the program's KV
holds at once and runs the request itself (one token) as an anonymous call (`end_notice`).
The gateway and the benchmark write them with `to_xargs`; the engine plugin reads them with
`parse_context`. Pure Python: no vLLM import. Ids are at most MAX_ID characters (autellix.programs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

from autellix.programs import MAX_ID

XARG_PROGRAM, XARG_THREAD, XARG_SERVICE, XARG_WAIT, XARG_CLASS, XARG_END = (
    "autellix_program", "autellix_thread", "autellix_service", "autellix_wait", "autellix_class",
    "autellix_end")
_KNOWN_XARGS = frozenset((XARG_PROGRAM, XARG_THREAD, XARG_SERVICE, XARG_WAIT, XARG_CLASS, XARG_END))
CLASS_VALUES = {"interactive": False, "batch": True}
"""`autellix_class` value -> ProgramContext.batch."""
CLASS_HEADER = "x-autellix-class"
"""The HTTP header a client names its call's class in (one of CLASS_VALUES; read by the gateway,
autellix.gateway.classes; sent by the benchmark for a batch fleet)."""


@dataclass(frozen=True, slots=True)
class ProgramContext:
    """What a request says about its program. `program=None`: an anonymous one-call program."""

    program: str | None = None
    thread: str = "0"
    service: float | None = None
    wait: float | None = None
    batch: bool | None = None
    """The class the call names for its program (True: batch); None: it names none."""
    end: bool = False
    """A program-end notice: the program has ended (its holds go); the request itself is not its call."""


def to_xargs(program: str, thread: str = "0", service: float | None = None,
             wait: float | None = None, batch: bool | None = None) -> dict[str, str | float]:
    """The `vllm_xargs` fields for a call of `program`; snapshots and class only when given."""
    xargs: dict[str, str | float] = {XARG_PROGRAM: program, XARG_THREAD: thread}
    if service is not None:
        xargs[XARG_SERVICE] = service
    if wait is not None:
        xargs[XARG_WAIT] = wait
    if batch is not None:
        xargs[XARG_CLASS] = class_name(batch)
    return xargs


def class_name(batch: bool) -> str:
    """A program's class by name: "batch" or "interactive" (the keys of CLASS_VALUES)."""
    return "batch" if batch else "interactive"


def end_notice(program: str) -> dict[str, Any]:
    """The body of a program-end notice for one engine: the cheapest completion that carries the
    program's id and `autellix_end` (a client talking straight to an engine can send it too)."""
    return {"prompt": " ", "max_tokens": 1, "vllm_xargs": {XARG_PROGRAM: program, XARG_END: 1}}


def parse_context(extra_args: Any) -> tuple[ProgramContext, list[tuple[str, str]]]:
    """Read `autellix_*` fields from `extra_args`. Returns the context and a list of (kind, message)
    problems. Never raises. Unknown `autellix_*` keys are reported and ignored; any invalid known field
    drops the whole context (the call runs anonymous) rather than guessing what the client meant."""
    if extra_args is None:
        return ProgramContext(), []
    if not isinstance(extra_args, Mapping):
        return ProgramContext(), [("extra_args", f"extra_args is not an object: {short_repr(extra_args)}")]
    problems = [(f"unknown:{k[:40]}", f"unknown key {short_repr(k)} ignored")
                for k in extra_args if isinstance(k, str) and k.startswith("autellix_")
                and k not in _KNOWN_XARGS]
    if XARG_PROGRAM not in extra_args:
        extra = [k for k in _KNOWN_XARGS - {XARG_PROGRAM} if k in extra_args]
        if extra:
            problems.append(("no-program",
                             f"{sorted(extra)} given without {XARG_PROGRAM}; call runs anonymous"))
        return ProgramContext(), problems
    try:
        ctx = ProgramContext(
            program=_ident(XARG_PROGRAM, extra_args[XARG_PROGRAM]),
            thread=_ident(XARG_THREAD, extra_args.get(XARG_THREAD, "0")),
            service=_amount(XARG_SERVICE, extra_args.get(XARG_SERVICE)),
            wait=_amount(XARG_WAIT, extra_args.get(XARG_WAIT)),
            batch=_class(extra_args.get(XARG_CLASS)),
            end=extra_args.get(XARG_END) in (1, True, "1", "true"),
        )
    except ValueError as exc:
        field = str(exc).partition(": ")[0]
        return ProgramContext(), problems + [(f"invalid:{field}", f"{exc}; call runs anonymous")]
    return ctx, problems


def _ident(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{field}: expected a string, got {type(value).__name__} {short_repr(value)}")
    text = str(value)
    if not text or len(text) > MAX_ID:
        raise ValueError(f"{field}: expected 1..{MAX_ID} characters, got {len(text)}")
    return text


def _amount(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{field}: expected a number, got {short_repr(value)}") from None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{field}: expected a number, got {type(value).__name__} {short_repr(value)}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{field}: expected a finite number >= 0, got {value}")
    return value


def _class(value: Any) -> bool | None:
    if value is None:
        return None
    batch = CLASS_VALUES.get(value) if isinstance(value, str) else None
    if batch is None:
        raise ValueError(f"{XARG_CLASS}: expected 'batch' or 'interactive', got {short_repr(value)}")
    return batch


def short_repr(value: Any) -> str:
    """repr() cut to 60 characters, for log lines that must not echo huge client input."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
