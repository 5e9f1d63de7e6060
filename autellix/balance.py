"""Load balancing across engines (docs/gateway.md, 'Load balancing'; the paper's Alg. 2).

`locality` sends a short call (<= `long_prompt` tokens) to the least-used engine, where recomputing its
prompt is cheap, and a long call to its program's pinned engine, where the program's KV cache lives. A
program is pinned at its first long call. Unhealthy engines are skipped; a program pinned to an engine
that is no longer healthy is re-pinned. Baselines: `round_robin`, `least_used`, and `sticky`: every call
of a program to one engine chosen by a consistent hash of its id (rendezvous hashing over the healthy
engines), what vllm-router's consistent_hash, SGLang's sticky routing and llm-d's session affinity do.
"""

from __future__ import annotations

import hashlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from autellix.programs import ProgramState


class NoHealthyEngine(RuntimeError):
    """Every engine is marked unhealthy."""


@dataclass(slots=True)
class EngineLoad:
    """What a balancer knows of one engine. `active` counts calls in flight on it."""

    index: int
    healthy: bool = True
    active: int = 0


class Balancer(ABC):
    name = "balancer"

    @abstractmethod
    def pick(self, program: ProgramState, prompt_tokens: int, engines: Sequence[EngineLoad]) -> int:
        """The index of the engine for this call. Raises NoHealthyEngine when none is healthy."""


def _healthy(engines: Sequence[EngineLoad]) -> list[EngineLoad]:
    up = [e for e in engines if e.healthy]
    if not up:
        raise NoHealthyEngine(f"none of {len(engines)} engine(s) is healthy")
    return up


def least_used(engines: Sequence[EngineLoad]) -> int:
    """Healthy engine with the fewest active calls; ties go to the lowest index."""
    return min(_healthy(engines), key=lambda e: (e.active, e.index)).index


class RoundRobin(Balancer):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = itertools.count()

    def pick(self, program: ProgramState, prompt_tokens: int, engines: Sequence[EngineLoad]) -> int:
        up = _healthy(engines)
        return up[next(self._next) % len(up)].index


class LeastUsed(Balancer):
    name = "least_used"

    def pick(self, program: ProgramState, prompt_tokens: int, engines: Sequence[EngineLoad]) -> int:
        return least_used(engines)


class Locality(Balancer):
    name = "locality"

    def __init__(self, long_prompt: int = 2048) -> None:
        if long_prompt < 0:
            raise ValueError(f"long_prompt: must be >= 0, got {long_prompt}")
        self.long_prompt = long_prompt

    def pick(self, program: ProgramState, prompt_tokens: int, engines: Sequence[EngineLoad]) -> int:
        if prompt_tokens <= self.long_prompt:
            return least_used(engines)
        pinned = program.engine
        if pinned is None or not any(e.index == pinned and e.healthy for e in engines):
            program.engine = least_used(engines)
        return program.engine


class Sticky(Balancer):
    """Consistent hashing of the program id: the healthy engine with the highest hash of (program,
    engine). Deterministic across processes and restarts; when an engine goes down only its programs
    move, and they come back when it returns."""

    name = "sticky"

    def pick(self, program: ProgramState, prompt_tokens: int, engines: Sequence[EngineLoad]) -> int:
        key = program.program_id.encode()
        return max(_healthy(engines), key=lambda e: hashlib.blake2b(
            key + b"/" + str(e.index).encode(), digest_size=8).digest()).index


BALANCERS: dict[str, type[Balancer]] = {
    "round_robin": RoundRobin, "least_used": LeastUsed, "locality": Locality, "sticky": Sticky,
}


def make_balancer(name: str) -> Balancer:
    try:
        return BALANCERS[name]()
    except KeyError:
        raise ValueError(f"balancer: unknown {name!r}; choose one of {sorted(BALANCERS)}") from None
