"""SRPT-oracle (simulator only): shortest remaining program work first, with perfect knowledge.

The simulator sets `Call.remaining` to the program's remaining service at the call's arrival; the
call's key is that minus what it has received since. It measures how far a non-clairvoyant policy is
from the optimum. Preempts when a waiting call's key is strictly smaller (bounded per step).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from autellix.policy.base import Policy
from autellix.policy.config import PolicyConfig
from autellix.programs import Call, CallState


class SRPT(Policy):
    name = "srpt"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self.queue: list[tuple[float, int, Call]] = []

    @staticmethod
    def key(call: Call) -> float:
        return call.remaining - call.service

    def _enqueue(self, call: Call) -> None:
        call.level = 0
        bisect.insort(self.queue, (self.key(call), call.seq, call))

    def _dequeue(self, call: Call) -> None:
        i = bisect.bisect_left(self.queue, (self.key(call), call.seq))
        if i == len(self.queue) or self.queue[i][2] is not call:
            raise RuntimeError(f"{call!r} is not queued")
        del self.queue[i]

    def waiting_order(self) -> Iterator[Call]:
        for _, _, call in list(self.queue):
            yield call

    def rank(self, call: Call) -> tuple:
        return (self.key(call), 0 if call.state is CallState.RUNNING else 1, call.seq)

    def outranks(self, waiter: Call, victim: Call) -> bool:
        return self.key(waiter) < self.key(victim)

    def priority(self, call: Call) -> int:
        return int(min(self.key(call), 2**31 - 1))
