"""One call in flight: from `Sessions.begin_call` to its one `finish`, and its accounting on the
upstream that runs it (load, step time, metrics), the process table (service, wait), the
conversation index (its replies) and the pause gate (its program's context, when the gate counted it).

Invariants: `finish` runs exactly once per call, whatever path the call takes (the proxy guarantees
it); every `load.active` increment (`sent`) has exactly one decrement (`unsent`, or `finish`).
"""

from __future__ import annotations

import time
from typing import Any

from autellix.gateway.api import Usage
from autellix.gateway.identity import Identifier, Identity
from autellix.gateway.metrics import GatewayMetrics
from autellix.gateway.pausing import Pausing
from autellix.gateway.sessions import Sessions
from autellix.gateway.upstreams import Upstream
from autellix.programs import Call


class Flight:
    """One call on its way through the gateway; an Attempt for the forwarder (autellix.gateway.forward)."""

    def __init__(self, sessions: Sessions, metrics: GatewayMetrics, identifier: Identifier, call: Call,
                 identity: Identity, endpoint: str) -> None:
        self.sessions, self.metrics, self.identifier = sessions, metrics, identifier
        self.call, self.identity, self.endpoint = call, identity, endpoint
        self.upstream: Upstream | None = None
        """The upstream running the call; None before one took it."""
        self.replies: list[Any] = []
        """The answer's replies (collected only for inferred programs); none: the call failed."""
        self.pausing: Pausing | None = None
        """The pause gate that counted this call (autellix.gateway.pausing), told when it ends."""
        self.t0 = time.perf_counter()
        self.done = False

    # -- Attempt -----------------------------------------------------------------------------------

    def sent(self, upstream: Upstream) -> None:
        upstream.load.active += 1
        self.upstream = upstream
        level = self.sessions.policy.level_of(self.call.start_service)
        self.metrics.call_sent(upstream.name, self.endpoint, level)

    def unsent(self, upstream: Upstream) -> None:
        upstream.load.active -= 1
        self.upstream = None

    def failed(self, upstream: Upstream, status: int) -> None:
        self.metrics.call_failed(upstream.name, status)

    # -- the end -----------------------------------------------------------------------------------

    def finish(self, usage: Usage | None, exact_step: float | None = None) -> None:
        """Charge the call (usage None: nothing known, nothing charged) and release its upstream."""
        if self.done:
            return
        self.done = True
        upstream, call = self.upstream, self.call
        latency = time.perf_counter() - self.t0
        wait = 0.0
        if upstream is not None:
            upstream.load.active -= 1
            tokens = usage.completion_tokens if usage else 0
            if exact_step is not None:
                upstream.observe_step(exact_step, exact=True)
            elif tokens:
                upstream.observe_step(latency / tokens, exact=False)
            wait = upstream.wait_steps(latency, tokens)
        self.sessions.finish_call(call, usage, wait)
        if self.pausing is not None:
            self.pausing.leave(call, usage)
        self.identifier.settle(self.identity, self.replies)
        if upstream is not None:
            self.metrics.call_done(upstream.name, self.endpoint, latency, call.service)
