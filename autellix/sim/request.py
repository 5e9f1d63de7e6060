"""SimCall: one LLM call as the simulated engine sees it (tokens, KV, progress, timestamps).

The policy core's `Call` carries scheduling state (level, service, wait); SimCall carries what the
engine model needs next to it. Lazy decode progress: while a call decodes, every engine step adds one
token to it, so its progress is kept as (step0, computed0, generated0) and read at any engine step s as
    computed(s) = computed0 + (s - step0),   generated(s) = generated0 + (s - step0).
Service is charged lazily too: `charged_to` is the engine step up to which decode tokens were charged
to the policy; the engine charges the rest whenever the policy could observe it (see engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autellix.programs import Call

WAITING, PREFILL, DECODE = 0, 1, 2
"""SimCall.mode: in the policy's queues, running a prefill (chunks), running decode steps."""


@dataclass(slots=True, eq=False)
class SimCall:
    """One call. Invariants: 0 <= generated <= output; a finished call has generated == output;
    `base` = blocks of the shared chain = sum of the chain's view sizes."""

    call: Call = field(repr=False)
    """The engine policy's record (engine-local process table)."""
    gcall: Call = field(repr=False)
    """The gateway's record (cluster-wide process table)."""
    index: int
    """The call's place in its program (ProgramSpec.calls)."""
    prompt: int
    output: int
    chain: tuple = field(repr=False)
    """Prefix-cache chain: ((segment, blocks), ...) shared with earlier calls of the program."""
    base: int
    issued: float
    prefix: SimCall | None = field(default=None, repr=False)
    """The record of the call whose history this one extends (CallSpec.prefix_call; it finished first)."""
    engine: int = -1
    mode: int = WAITING
    generated: int = 0
    computed: int = 0
    """KV tokens of this call on the GPU (running) or saved in the CPU pool (swapped)."""
    target: int = 0
    """Tokens the current prefill must have in KV before decoding resumes."""
    prefill_left: int = 0
    swapped: int = 0
    """Blocks of this call in the CPU swap pool (0 unless swapped out)."""
    private: int = 0
    """GPU blocks held outside the prefix cache while running (prefill mode; decode derives it)."""
    step0: int = 0
    computed0: int = 0
    generated0: int = 0
    charged_to: int = 0
    admit_seq: int = 0
    event_version: int = 0
    level_slot: int = -1
    """Level under which the engine files this running call (mirrors call.level)."""
    # metrics
    first_token: float = -1.0
    finished: float = -1.0
    wait_s: float = 0.0
    wait_start: float = 0.0
    preemptions: int = 0
    swaps: int = 0
    hit_tokens: int = 0
    """Prompt tokens served from the prefix cache at first admission."""
    recomputed: int = 0
    """Tokens computed again after preemptions by recompute."""
    prefilled: int = 0
    """Prompt (and resumed output) tokens computed for this call in all, cache misses and recomputation."""

    @property
    def done(self) -> bool:
        return self.finished >= 0
