"""ThunderAgent's pause gate at the gateway: the `thunderagent` system on real engines, whole programs
paused and resumed in front of stock vLLM engines (no engine change). The rule is the policy core's
PauseGate (autellix.policy.pause_gate), which the simulator's cluster applies too; this module applies it
to the calls the proxy forwards.

- Which calls: every call `Proxy.call` forwards (chat and text completions, Messages, Responses), of
  named and inferred programs alike, once, before an engine is picked. Anonymous one-call requests (a
  batch of prompts, `--infer-programs off`) pass uncounted: they leave no history to pause or resume
  (their KV is free to evict once they end), and the threshold's headroom absorbs them while they run.
- Waiting: a call of a paused program, or of a program the gate has not let in yet (a new program
  starts paused, its first prompt as its context), waits on a future until a rebalance resumes its
  program, or until its client disconnects (its own timeout included): it then leaves the gate as if
  it had never come (a program never let in is forgotten) and the answer is 499.
- Context: when a counted call ends, its program's context is prompt + output tokens of the answer's
  usage (a stream's usage chunk, which the gateway always asks for; a stream cut short: what it
  streamed; no answer: the prompt estimate); then the gate rebalances and wakes what it resumed.
- Program end (DELETE, the SDK's exit, TTL expiry): `end`; calls of it still waiting go on uncounted
  (an ended program's calls finish normally: docs/gateway.md).
- Capacity: `capacity()` (a fixed `--kv-capacity`, else the sum the engines' /metrics report), reread
  at each rebalance, which also runs after each metrics scrape; while unknown nothing waits. Threshold:
  PolicyConfig.admit_high (0.9), the simulator's (docs/simulator.md, "KV residency").
- A pause is itself an event: the room it frees goes to waiting calls at once (a second rebalance,
  which gives what the next event would). The simulator resumes at its next event, which a busy fleet
  has at once; an idle gateway's next event may be a tool call away.
- One gate per gateway process: gateway replicas sharing engines (`--ray`) would each count the whole
  cache.

Invariants: every call `enter` returned True for is `leave`d exactly once (Flight.finish), so the gate's
running counts balance; a waiter is in `waiting` until it is started, released or withdrawn; every
program in `fresh` (never let in) has a waiter; `programs` holds each program the gate knows by its
table entry, so a late call of an ended program whose id was reused never touches the new one.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Receive

from autellix.gateway.api import Usage
from autellix.gateway.errors import GatewayError
from autellix.gateway.streaming import wait_disconnect
from autellix.policy.pause_gate import PauseGate
from autellix.programs import Call, ProgramState

log = logging.getLogger("autellix.gateway")


@dataclass(eq=False, slots=True)
class _Waiter:
    call: Call
    woken: asyncio.Future[bool]
    """Result True: started (counted); False: released uncounted (its program ended)."""


class Pausing:
    """The pause gate over the gateway's calls (module doc)."""

    def __init__(self, threshold: float, capacity: Callable[[], float | None]) -> None:
        self.gate = PauseGate(math.inf, threshold)
        self.capacity = capacity
        self.waiting: dict[str, list[_Waiter]] = {}
        """Program id -> its calls waiting at the gate, in arrival order."""
        self.fresh: set[str] = set()
        self.programs: dict[str, ProgramState] = {}

    async def enter(self, call: Call, receive: Receive) -> bool:
        """Return once the call may go to an engine: True when the gate counts it (`leave` it exactly
        once), False when it passes uncounted. GatewayError 499 when its client leaves while it waits."""
        program = call.program
        pid = program.program_id
        if program.ephemeral:
            return False
        if self.programs.get(pid) is not program:  # new to the gate (or a reused id of an ended one)
            if pid in self.programs:  # (its end was never heard: keep `usage` true all the same)
                self.end(self.programs[pid])
            self.programs[pid] = program
            self.gate.arrive(pid, call.prompt_tokens)
            self.fresh.add(pid)
        elif self.gate.active(pid):
            self.gate.started(pid, call.prompt_tokens)
            return True
        waiter = _Waiter(call, asyncio.get_running_loop().create_future())
        self.waiting.setdefault(pid, []).append(waiter)
        self.rebalance()
        try:
            woken = waiter.woken.done() or await _woken_or_gone(waiter.woken, receive)
        except BaseException:  # the handler itself was cancelled (server shutdown)
            self._withdraw(waiter)
            raise
        if not woken:
            self._withdraw(waiter)
            raise GatewayError(499, "client disconnected while its program was paused at the gateway")
        return waiter.woken.result()

    def leave(self, call: Call, usage: Usage | None) -> None:
        """A counted call ended: its program's context is now what the engine holds for it."""
        pid = call.program.program_id
        if self.programs.get(pid) is not call.program:  # the program ended meanwhile
            return
        tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else call.prompt_tokens
        self.gate.finished(pid, tokens)
        self.rebalance()

    def end(self, program: ProgramState) -> None:
        """The program left the process table: the gate forgets it; its waiting calls go uncounted."""
        pid = program.program_id
        if self.programs.get(pid) is not program:
            return
        del self.programs[pid]
        self.fresh.discard(pid)
        self.gate.end(pid)
        for waiter in self.waiting.pop(pid, ()):
            waiter.woken.set_result(False)
        self.rebalance()

    def rebalance(self) -> None:
        """ThunderAgent's memory check (PauseGate.rebalance) at the current capacity; the calls of the
        programs it resumes are started and woken."""
        self.gate.set_capacity(self.capacity() or math.inf)
        pauses = self.gate.pauses
        resumed = self.gate.rebalance()
        if self.gate.pauses != pauses and self.waiting:  # room freed by a pause: waiting calls take it
            resumed = self.gate.rebalance()
        for pid in resumed:
            self.fresh.discard(pid)
            for waiter in self.waiting.pop(pid, ()):
                self.gate.started(pid, waiter.call.prompt_tokens)
                waiter.woken.set_result(True)

    def report(self) -> None:
        """Log the capacity the gate works with (once the engines were first scraped)."""
        capacity = self.capacity()
        if capacity is None:
            log.warning("pause gate: no engine reports its KV cache (vllm:cache_config_info on /metrics) "
                        "yet; nothing waits until one does (or set --kv-capacity)")
        else:
            log.info("pause gate: KV capacity %d tokens, threshold %.2f", capacity, self.gate.threshold)

    def _withdraw(self, waiter: _Waiter) -> None:
        """A waiting call leaves before it ran: counted already (woken, then cancelled), it is left;
        else the gate goes back to as if it had never come."""
        if waiter.woken.done():
            if waiter.woken.result():
                self.leave(waiter.call, None)
            return
        waiter.woken.cancel()
        pid = waiter.call.program_id
        queue = self.waiting.get(pid, [])
        queue.remove(waiter)
        if queue:
            return
        self.waiting.pop(pid, None)
        if pid in self.fresh:  # never let in: forgotten (not active, so no usage to give back)
            self.fresh.discard(pid)
            del self.programs[pid]
            self.gate.end(pid)


async def _woken_or_gone(woken: asyncio.Future[bool], receive: Receive) -> bool:
    """Wait until `woken` is set (True) or the client disconnects first (False)."""
    watching = asyncio.ensure_future(wait_disconnect(receive))
    try:
        await asyncio.wait((woken, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    return woken.done()
