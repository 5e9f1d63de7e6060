"""Programs inferred from the conversation, for calls that name none (docs/gateway.md, "Inferred
programs"). Pure Python: no HTTP here; the proxy feeds it bodies and replies.

Rules, applied to one owner's calls (another owner's calls never match):
1. Extension. A chat call whose message list starts with an earlier call's messages followed by that
   call's reply (the *state* that reply left) belongs to the earlier call's program; the longest such
   state wins. The first call to extend a state continues its thread; each later one (parallel
   branches, best-of-N, tree search) opens a branch thread `T.k` of that program.
2. Hand-off. A chat call that extends no state, but whose last message is verbatim the reply of a recent
   call of exactly one program (at least HANDOFF_MIN characters: a sub-agent, or a simulated user, given
   another agent's words), joins that program in a new branch thread.
3. Otherwise the call opens a new program. A call that only shares a prefix with other calls (a system
   prompt, a task, even its whole message list) never merges: only a reply this gateway returned links
   two calls, so two runs of one agent on one task stay two programs.
Text completions follow rule 1 on the prompt string: the prompt starts with an earlier prompt followed
by its completion.

What "the same message" means (robust to what clients do to histories): role, the text (a string, or
the text parts of a content list joined, surrounding whitespace stripped), the id and function name of
each tool call (arguments are re-serialised by some clients), and a tool message's `tool_call_id`.
Every other field (name, reasoning_content, refusal, ...) is ignored. Messages are hashed once per call
into a chain c_i = H(c_(i-1), message_i), seeded by the owner; text prompts are chained in blocks of
BLOCK characters, and a text state keeps its tail past the last block boundary, compared exactly.
H is Python's own tuple hash over SipHash-hashed strings (in C, randomised per process: a client
cannot aim for collisions); keys are 64 bits, so two different histories share a key with probability
~ keys^2 / 2^64, below 1e-9 at the index's capacity.

Invariants: memory is bounded (at most MAX_KEYS states and MAX_KEYS replies, least recently used first
out, none kept past the TTL); a state names the program and thread of the call whose reply made it, and
`claims` counts the calls that extended it (a failed call gives its claim back if it was the last, so a
retry continues where the failed call would have).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BLOCK = 1024
"""Characters per chained block of a text prompt."""
HANDOFF_MIN = 64
"""Shortest reply text that links a new conversation to the program that wrote it (rule 2)."""
MAX_KEYS = 1 << 17
MAX_PER_KEY = 16
"""Programs kept under one fingerprint (identical histories in different programs); oldest out."""
MAX_THREAD = 64


class MalformedMessages(ValueError):
    """A message list the gateway cannot read (the proxy answers 400)."""


def _text(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        raise MalformedMessages(f"{where}.content: must be a string, a list of parts or null, "
                                f"got {type(content).__name__}")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise MalformedMessages(f"{where}.content[{j}]: must be an object with a string `type`")
        kind = part["type"]
        value = part.get("text") if kind == "text" else part.get(kind)
        if kind == "text" and not isinstance(value, str):
            raise MalformedMessages(f"{where}.content[{j}].text: must be a string")
        texts.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str))
    return "".join(texts).strip()


def fingerprint(message: object, index: int | str = -1) -> tuple[str, ...]:
    """What identifies a message (module doc); raises MalformedMessages naming `messages[index]`."""
    if type(message) is dict:  # the common case first: plain text, no tool calls (every call, every message)
        role, content = message.get("role"), message.get("content")
        if type(content) is str and type(role) is str and role and role != "tool" \
                and not message.get("tool_calls"):
            return role, content.strip()
    return _fingerprint(message, index if isinstance(index, str) else f"messages[{index}]")


def _fingerprint(message: object, where: str) -> tuple[str, ...]:
    if not isinstance(message, dict):
        raise MalformedMessages(f"{where}: must be an object, got {type(message).__name__}")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise MalformedMessages(f"{where}.role: must be a non-empty string")
    parts = [role, _text(message.get("content"), where)]
    calls = message.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise MalformedMessages(f"{where}.tool_calls: must be a list")
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise MalformedMessages(f"{where}.tool_calls: each needs a `function` object")
            parts += [str(call.get("id", "")), str(function.get("name", ""))]
    if role == "tool":
        parts.append(str(message.get("tool_call_id", "")))
    return tuple(parts)


def _reply_key(seed: int, text: str) -> int:
    return hash((seed, "reply", text))


def branch_thread(thread: str, k: int | str) -> str:
    name = f"{thread}.{k}"
    return name if len(name) <= MAX_THREAD else f"b{hash(name) & 0xFFFFFFFFFFFF:012x}"


@dataclass(slots=True)
class _State:
    program_id: str
    thread: str
    tail: str = ""
    """Text states only: the characters past the state's last full block."""
    claims: int = 0


@dataclass(slots=True)
class _Slot:
    states: list[_State]
    used: float


@dataclass(slots=True)
class _Reply:
    program_id: str
    thread: str
    used: float
    ambiguous: bool = False
    """Two programs wrote this text: it links nothing."""
    handoffs: int = 0


@dataclass(slots=True)
class Inference:
    """The index's decision for one call, and what it keeps to remember that call's reply."""

    program_id: str
    thread: str
    how: str
    """extends | branch | handoff | new"""
    seed: int
    prefix: int
    """Chain value after the prompt (chat: all messages; text: all full blocks)."""
    rest: str = ""
    """Text calls: the prompt past its last full block."""
    chat: bool = True
    claimed: tuple[_State, int] | None = field(default=None, repr=False)


class ConversationIndex:
    """Fingerprints of recent replies -> (program, thread); see the module doc for the rules."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_keys = max_keys
        self.states: OrderedDict[int, _Slot] = OrderedDict()
        self.replies: OrderedDict[int, _Reply] = OrderedDict()
        """Reply-text key -> the program and thread that wrote it (rule 2)."""

    # -- arriving calls ----------------------------------------------------------------------------

    def infer_chat(self, owner: str | None, messages: object) -> Inference:
        if not isinstance(messages, list) or not messages:
            raise MalformedMessages("messages: must be a non-empty list of message objects")
        seed = hash(("chat", owner))
        chain = [seed]
        key = seed
        for i, message in enumerate(messages):
            key = hash((key, fingerprint(message, i)))
            chain.append(key)
        self._expire()
        for i in range(len(chain) - 1, 1, -1):  # a state holds at least a prompt and a reply
            slot = self.states.get(chain[i])
            if slot is not None:
                return self._extend(slot, chain[i], slot.states, seed, chain[-1])
        reply = self._handoff(seed, messages[-1])
        if reply is not None:
            reply.handoffs += 1
            return Inference(reply.program_id, branch_thread(reply.thread, f"h{reply.handoffs}"),
                             "handoff", seed, chain[-1])
        return Inference(self._new_id(), "0", "new", seed, chain[-1])

    def infer_text(self, owner: str | None, prompt: str) -> Inference:
        seed = hash(("text", owner))
        blocks = len(prompt) // BLOCK
        chain = [seed]
        for j in range(blocks):
            chain.append(hash((chain[-1], prompt[j * BLOCK:(j + 1) * BLOCK])))
        self._expire()
        for j in range(blocks, -1, -1):
            slot = self.states.get(chain[j])
            if slot is None:
                continue
            rest = prompt[j * BLOCK:]
            fitting = [s for s in slot.states if rest.startswith(s.tail)]
            if fitting:
                longest = max(len(s.tail) for s in fitting)
                fitting = [s for s in fitting if len(s.tail) == longest]
                return self._extend(slot, chain[j], fitting, seed, chain[-1], prompt[blocks * BLOCK:])
        return Inference(self._new_id(), "0", "new", seed, chain[-1], prompt[blocks * BLOCK:], chat=False)

    def _extend(self, slot: _Slot, key: int, candidates: list[_State], seed: int, prefix: int,
                rest: str | None = None) -> Inference:
        """The oldest state not yet extended continues its thread; else the newest one branches."""
        self.states.move_to_end(key)
        slot.used = self.clock()
        state = next((s for s in candidates if not s.claims), candidates[-1])
        k = state.claims
        state.claims += 1
        thread = state.thread if k == 0 else branch_thread(state.thread, k)
        return Inference(state.program_id, thread, "extends" if k == 0 else "branch", seed, prefix,
                         rest or "", chat=rest is None, claimed=(state, k))

    def _handoff(self, seed: int, last: object) -> _Reply | None:
        text = _text(last.get("content"), "messages[-1]") if isinstance(last, dict) else ""
        if len(text) < HANDOFF_MIN:
            return None
        reply = self.replies.get(_reply_key(seed, text))
        return None if reply is None or reply.ambiguous else reply

    @staticmethod
    def _new_id() -> str:
        return "conv-" + secrets.token_hex(8)

    # -- finished calls ----------------------------------------------------------------------------

    def replied(self, inference: Inference, replies: list[Any]) -> None:
        """Remember the states the call's replies leave (chat: assistant messages; text: strings)."""
        now = self.clock()
        for reply in replies:
            if inference.chat:
                try:
                    key = hash((inference.prefix, fingerprint(reply, "reply")))
                except MalformedMessages:
                    continue
                self._add(key, _State(inference.program_id, inference.thread), now)
                self._remember_reply(inference, reply, now)
            elif isinstance(reply, str):
                full, key = inference.rest + reply, inference.prefix
                while len(full) >= BLOCK:
                    key = hash((key, full[:BLOCK]))
                    full = full[BLOCK:]
                self._add(key, _State(inference.program_id, inference.thread, tail=full), now)
        self._expire()

    def failed(self, inference: Inference) -> None:
        """The call got no reply: give its claim back if no later call claimed after it."""
        if inference.claimed is not None:
            state, k = inference.claimed
            if state.claims == k + 1:
                state.claims = k

    def _add(self, key: int, state: _State, now: float) -> None:
        slot = self.states.get(key)
        if slot is None:
            self.states[key] = _Slot([state], now)
            return
        slot.states.append(state)
        del slot.states[:-MAX_PER_KEY]
        slot.used = now
        self.states.move_to_end(key)

    def _remember_reply(self, inference: Inference, reply: dict[str, Any], now: float) -> None:
        try:
            text = _text(reply.get("content"), "reply")
        except MalformedMessages:
            return
        if len(text) < HANDOFF_MIN:
            return
        key = _reply_key(inference.seed, text)
        known = self.replies.get(key)
        if known is None:
            self.replies[key] = _Reply(inference.program_id, inference.thread, now)
            return
        known.ambiguous |= known.program_id != inference.program_id
        known.used = now
        self.replies.move_to_end(key)

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl
        states, replies = self.states, self.replies
        for table in (states, replies):
            while table and (len(table) > self.max_keys or next(iter(table.values())).used < cutoff):
                table.popitem(last=False)

    def __len__(self) -> int:
        return len(self.states)
