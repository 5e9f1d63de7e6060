"""Chat programs replayed from the Mooncake conversation trace (12,031 real calls over 59 minutes).

Source: shared/data/mooncake/conversation_trace.jsonl, `{timestamp ms, input_length, output_length,
hash_ids}` with one hash per 512-token block of the prompt. Block 0 is a system prompt every call shares.

Conversations: the trace has no session id; calls of one conversation share leading blocks beyond block 0.
A call's parent is the earlier call that first created its longest shared prefix (a trie over block
hashes, depth >= 2); a call with no shared block beyond block 0 starts a new conversation. Result: 7,373
conversations, 1.63 calls on average, up to 43. A program is one conversation, calls in trace order, each
waiting for the previous one (back to back, no think time: the trace's gaps, median ~150 s, mix user
think time with the original service time).

prefix_call = the parent when the call shares all of the parent's complete blocks and its prompt can hold
the parent's prompt + output (76% of follow-ups: cumulative history); otherwise None (a branch that
reuses only part of the history; the shared blocks are then not modelled). Text: none in the trace.

Timing: `timing="poisson"` (default) samples conversations uniformly with replacement (seeded) and gives
them Poisson arrivals at `rate`; `timing="trace"` replays conversations in trace order with their real
start times, rescaled so the mean arrival rate is `rate` (keeps the trace's burstiness; seed unused).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from autellix.workloads.data import data_file, read_jsonl
from autellix.workloads.sampling import check_args, poisson_arrivals, rngs
from autellix.workloads.spec import CallSpec, ProgramSpec

KIND = "mooncake"
BLOCK = 512


@dataclass(frozen=True, slots=True)
class _Conversation:
    start: float  # seconds since the trace began
    calls: tuple[CallSpec, ...]


@dataclass(frozen=True, slots=True)
class _Trace:
    conversations: tuple[_Conversation, ...]
    duration: float  # seconds from first to last call


@lru_cache(maxsize=1)
def _trace() -> _Trace:
    rows = sorted(read_jsonl(data_file("mooncake", "conversation_trace.jsonl")), key=lambda r: r["timestamp"])
    trie: dict[tuple[int, int], int] = {}  # (node, block hash) -> child node; node 0 is the empty prefix
    owner: list[int] = [-1]  # node -> row that created it
    conv_of: list[int] = []  # row -> conversation
    parent_of: list[tuple[int, int]] = []  # row -> (parent row or -1, shared blocks)
    members: list[list[int]] = []
    for i, r in enumerate(rows):
        node, parent, shared = 0, -1, 0
        for depth, h in enumerate(r["hash_ids"], start=1):
            child = trie.get((node, h))
            if child is None:
                child = len(owner)
                trie[(node, h)] = child
                owner.append(i)
            elif depth >= 2:  # an earlier call holds this prefix beyond the system block
                parent, shared = owner[child], depth
            node = child
        parent_of.append((parent, shared))
        if parent < 0:
            conv_of.append(len(members))
            members.append([i])
        else:
            conv_of.append(conv_of[parent])
            members[conv_of[parent]].append(i)
    t0 = rows[0]["timestamp"] / 1000
    convs: list[_Conversation] = []
    for rows_idx in members:
        pos = {row: k for k, row in enumerate(rows_idx)}
        calls: list[CallSpec] = []
        for k, i in enumerate(rows_idx):
            r = rows[i]
            prompt, out = max(1, r["input_length"]), max(1, r["output_length"])
            prefix = None
            parent, shared = parent_of[i]
            if parent >= 0:
                pr = rows[parent]
                n_in = pr["input_length"]
                if shared >= n_in // BLOCK and prompt >= n_in + pr["output_length"]:
                    prefix = pos[parent]
            calls.append(CallSpec(prompt, out, 0, (k - 1,) if k else (), 0.0, prefix, None, "turn"))
        convs.append(_Conversation(rows[rows_idx[0]]["timestamp"] / 1000 - t0, tuple(calls)))
    return _Trace(tuple(convs), rows[-1]["timestamp"] / 1000 - t0)


def generate(n_programs: int, rate: float, seed: int,
             timing: Literal["poisson", "trace"] = "poisson") -> list[ProgramSpec]:
    """`n_programs` Mooncake conversations arriving at `rate`/s (see the module docstring for `timing`)."""
    check_args(n_programs, rate)
    trace = _trace()
    convs = trace.conversations
    if timing == "poisson":
        arrival_rng, rng = rngs(seed)
        arrivals = poisson_arrivals(arrival_rng, n_programs, rate)
        picks = rng.integers(0, len(convs), n_programs).tolist()
    elif timing == "trace":
        # Trace order, wrapping around after the last conversation; time compressed to the target rate.
        period = trace.duration + trace.duration / len(convs)
        speed = (len(convs) / period) / rate
        picks = [p % len(convs) for p in range(n_programs)]
        arrivals = [(convs[c].start + (p // len(convs)) * period) * speed for p, c in enumerate(picks)]
    else:
        raise ValueError(f"timing must be 'poisson' or 'trace', got {timing!r}")
    return [ProgramSpec(f"{KIND}-{p:06d}", KIND, arrivals[p], convs[c].calls) for p, c in enumerate(picks)]


def generate_trace(n_programs: int, rate: float, seed: int) -> list[ProgramSpec]:
    """The `mooncake-trace` workload: conversations at the trace's real start times, bursts included,
    time-scaled so the mean arrival rate is `rate` (seed unused)."""
    return generate(n_programs, rate, seed, timing="trace")
