"""Lazy service charging on an event step, exactly as if every running call were charged every step.

Decoding calls are charged only when the policy could observe their service (see engine.py). On an
event step `end` the calls that need charging (`work`) are brought to step end-1 first, which can change
no level (every call's quantum expiry is >= end), then charged the event step itself in admission order:
the order in which the step-by-step mode charges every step. Order matters only through gang leveling,
where one call's demotion resets its siblings' in-level service, so for gang policies every running
sibling of a call that may cross its quantum on this step is added to `work`.
"""

from __future__ import annotations

from collections.abc import Sequence

from autellix.policy import Policy
from autellix.programs import Call
from autellix.sim.request import DECODE, WAITING, SimCall


def add_gang_siblings(work: list[SimCall], end: int, chunk_of: dict[int, int], sims: dict[Call, SimCall],
                      quanta: Sequence[float], prefill_weight: float) -> None:
    """Append the running siblings (same engine-local program) of calls whose level may move at `end`."""
    seen = {id(sc) for sc in work}
    for sc in list(work):
        call = sc.call
        if sc.mode == DECODE:
            amount = end - sc.charged_to
        else:
            c = chunk_of.get(id(sc), 0)
            amount = prefill_weight * c + (1 if c == sc.prefill_left else 0)
        if call.level_service + amount < quanta[call.level]:
            continue  # its level cannot move on this step, so neither can its siblings'
        for other_call in call.program.calls.values():
            other = sims.get(other_call)
            if other is not None and other.mode != WAITING and id(other) not in seen:
                seen.add(id(other))
                work.append(other)


def charge_event_step(policy: Policy, work: list[SimCall], end: int, chunk_of: dict[int, int]) -> None:
    """Charge `work` through step `end`: lazy decode tokens, then the event step in admission order
    (decodes 1 token; prefill calls their chunk, plus the first token when their prefill completes).
    Prefill progress (prefill_left, computed) is applied here too."""
    if len(work) > 1:
        work.sort(key=_admit_order)
    for sc in work:
        if sc.mode == DECODE and sc.charged_to < end - 1:
            policy.charge(sc.call, decode_tokens=end - 1 - sc.charged_to)
            sc.charged_to = end - 1
    for sc in work:
        if sc.mode == DECODE:
            policy.charge(sc.call, decode_tokens=1)
            sc.charged_to = end
        else:
            c = chunk_of.get(id(sc), 0)
            if c:
                sc.prefill_left -= c
                sc.computed += c
                policy.charge(sc.call, decode_tokens=0 if sc.prefill_left else 1, prefill_tokens=c)


def _admit_order(sc: SimCall) -> int:
    return sc.admit_seq
