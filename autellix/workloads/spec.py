"""Agent programs as data: a program is a DAG of LLM calls with token counts, threads and tool pauses.

The simulator and the real benchmark both consume these specs, so everything a replay needs is here:
how big each prompt and output is, which calls must finish first, how long the tool sleeps, which earlier
call's prompt+output this call's prompt extends (chat history, for prefix caching), and real text.

Token conventions (shared by every generator):
- `prompt_tokens` is the FULL prompt the engine would prefill without any cache (system prompt, history,
  new text). When `prefix_call` is set, the first `prefix.prompt_tokens + prefix.output_tokens` of those
  tokens are exactly the prefix call's prompt followed by its output (cumulative history); the rest are
  new (`ProgramSpec.new_prompt_tokens`).
- `prompt_text` is real text for the NEW part only (what a client appends after the prefix call's prompt
  and generated output), or None where the source has no text. Its length need not match: a client sizes
  it to `new_prompt_tokens` with its own tokenizer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One LLM call of a program.

    Invariants (checked by `ProgramSpec`, which knows the call's index): prompt_tokens >= 1,
    output_tokens >= 1, thread >= 0, tool_pause finite and >= 0, every dependency and the prefix call
    point to earlier calls, and the prefix call is a (transitive) dependency, so its output exists when
    this call is issued.
    """

    prompt_tokens: int
    output_tokens: int
    thread: int = 0
    depends_on: tuple[int, ...] = ()
    """Indices of earlier calls that must all finish before this call may be issued."""
    tool_pause: float = 0.0
    """Seconds to sleep after the last dependency finishes (tool execution) before issuing the call."""
    prefix_call: int | None = None
    """Earlier call whose prompt + output is a prefix of this prompt (cumulative chat history)."""
    prompt_text: str | None = None
    """Real text of the new part of the prompt (see module docstring), or None."""
    role: str = "llm"
    """What the call is in its agent ("turn", "tool", "answer", "sample", "value", "step"): for reports."""


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """One agent program: calls in a topological order (every edge points backwards), an arrival time.

    Invariants (checked in `__post_init__`): at least one call; `arrival` finite and >= 0; each call's
    `depends_on` holds distinct indices < its own; `prefix_call`, when set, is a transitive dependency and
    its prompt + output fit inside this call's prompt; the calls of one thread form a chain (each one
    transitively depends on the thread's previous call), so a thread is a sequential line of work and
    `num_threads` > 1 means real parallelism is possible.
    """

    program_id: str
    kind: str
    arrival: float
    calls: tuple[CallSpec, ...]

    def __post_init__(self) -> None:
        if not self.calls:
            raise ValueError(f"{self.program_id}: a program needs at least one call")
        if not (math.isfinite(self.arrival) and self.arrival >= 0):
            raise ValueError(f"{self.program_id}: arrival must be finite and >= 0, got {self.arrival}")
        _validate_calls(self.program_id, self.calls)

    @property
    def num_calls(self) -> int:
        return len(self.calls)

    @property
    def num_threads(self) -> int:
        """Distinct thread ids: 1 for sequential programs, the fan-out width for tree search."""
        return len({c.thread for c in self.calls})

    @property
    def is_parallel(self) -> bool:
        return self.num_threads > 1

    @property
    def total_output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.calls)

    @property
    def total_prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    def retimed(self, arrival: float, program_id: str | None = None) -> ProgramSpec:
        """This program arriving at `arrival` (optionally renamed). The calls, immutable and already
        validated, are shared, so only the arrival is checked (used to interleave or re-time workloads)."""
        if not (math.isfinite(arrival) and arrival >= 0):
            raise ValueError(f"{self.program_id}: arrival must be finite and >= 0, got {arrival}")
        new = object.__new__(ProgramSpec)
        for name, value in (("program_id", program_id or self.program_id), ("kind", self.kind),
                            ("arrival", arrival), ("calls", self.calls)):
            object.__setattr__(new, name, value)  # frozen: bypass __setattr__ as dataclasses does
        return new

    def prefix_tokens(self, i: int) -> int:
        """Leading prompt tokens of call i shared with its prefix call's prompt + output (0 if none)."""
        p = self.calls[i].prefix_call
        if p is None:
            return 0
        return self.calls[p].prompt_tokens + self.calls[p].output_tokens

    def new_prompt_tokens(self, i: int) -> int:
        """Prompt tokens of call i that are not its prefix call's prompt + output."""
        return self.calls[i].prompt_tokens - self.prefix_tokens(i)


def _validate_calls(pid: str, calls: tuple[CallSpec, ...]) -> None:
    # ancestors[i] is a bitset (Python int) of every call that call i transitively depends on. A tight
    # loop: generation validates every program, ~0.5M calls for 10,000 mixed programs.
    ancestors: list[int] = []
    last_in_thread: dict[int, int] = {}
    isfinite = math.isfinite
    for i, c in enumerate(calls):
        if c.prompt_tokens < 1 or c.output_tokens < 1 or c.thread < 0:
            raise ValueError(f"{pid} call {i}: needs prompt, output tokens >= 1 and thread >= 0, got {c}")
        if not (c.tool_pause >= 0 and isfinite(c.tool_pause)):
            raise ValueError(f"{pid} call {i}: tool_pause must be finite and >= 0, got {c.tool_pause}")
        anc = 0
        deps = c.depends_on
        for d in deps:
            if not 0 <= d < i:
                raise ValueError(f"{pid} call {i}: dependency {d} does not point to an earlier call")
            anc |= ancestors[d] | (1 << d)
        if len(deps) > 1 and len(set(deps)) != len(deps):
            raise ValueError(f"{pid} call {i}: duplicate dependencies {deps}")
        p = c.prefix_call
        if p is not None:
            if not (anc >> p) & 1:
                raise ValueError(f"{pid} call {i}: prefix call {p} is not a (transitive) dependency")
            if calls[p].prompt_tokens + calls[p].output_tokens > c.prompt_tokens:
                raise ValueError(f"{pid} call {i}: prefix call {p}'s prompt + output exceed this prompt")
        prev = last_in_thread.get(c.thread)
        if prev is not None and not (anc >> prev) & 1:
            raise ValueError(f"{pid} call {i}: thread {c.thread} is not a chain (misses call {prev})")
        last_in_thread[c.thread] = i
        ancestors.append(anc)


def scale_program(program: ProgramSpec, scale: float) -> ProgramSpec:
    """Same structure with token counts multiplied by `scale` (each >= 1), prefix invariants kept.

    New prompt tokens and outputs are scaled, then full prompts are rebuilt from the scaled prefix, so a
    prefix call's prompt + output still fits exactly inside its successor's prompt.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    if scale == 1.0:
        return program
    new_calls: list[CallSpec] = []
    for i, c in enumerate(program.calls):
        out = max(1, round(c.output_tokens * scale))
        if c.prefix_call is None:
            prompt = max(1, round(c.prompt_tokens * scale))
        else:
            fresh = program.new_prompt_tokens(i)
            fresh_scaled = max(1, round(fresh * scale)) if fresh > 0 else 0
            pc = new_calls[c.prefix_call]
            prompt = pc.prompt_tokens + pc.output_tokens + fresh_scaled
        new_calls.append(CallSpec(prompt, out, c.thread, c.depends_on, c.tool_pause, c.prefix_call,
                                  c.prompt_text, c.role))
    return dataclasses.replace(program, calls=tuple(new_calls))
