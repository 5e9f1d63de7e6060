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
H is keyed BLAKE2b (64-bit digests): stable across processes, so replicas that share the key (given by
the deployment's store: autellix.deploy.program_store) compute the same keys, and secret, so a client
cannot aim for collisions; two different histories share a key with probability ~ keys^2 / 2^64, below
1e-9 at the index's capacity. Without a shared key each index draws its own.

Shared across replicas (a `SharedIndex`: the store's copy of every replica's states): each replica
publishes the states and replies it learns (`publish`), and a call its own index cannot place (it would
open a new program) is matched against the shared index by its keys (`match_chat` / `match_text`, run
in the store) before it does. A replica's own index answers everything else: within one conversation
every state names the same program, so a replica that saw an older state of it still finds the right
program (only thread labels may differ from what the shared index would say).

Invariants: memory is bounded (at most MAX_KEYS states and MAX_KEYS replies, least recently used first
out, none kept past the TTL); a state names the program and thread of the call whose reply made it, and
`claims` counts the calls that extended it (a failed call gives its claim back if it was the last, so a
retry continues where the failed call would have).
"""

from __future__ import annotations

import hashlib
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
WINDOW_BLOCKS = 8
"""Text prompts matched in the shared index: states at most this many blocks before the prompt's end."""
KEY_BYTES = 16

Entry = tuple[str, int, str, str, str]
"""A published link: ("state", key, program, thread, tail) or ("reply", key, program, thread, "")."""


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


class Hasher:
    """H(previous key, strings) -> 64-bit key: keyed BLAKE2b over the previous key and each string's
    length and UTF-8 bytes (lengths make ("ab", "c") and ("a", "bc") differ)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(KEY_BYTES)
        self._base = hashlib.blake2b(digest_size=8, key=self.key)

    def __call__(self, previous: int, parts: tuple[str, ...] | str) -> int:
        h = self._base.copy()
        h.update(previous.to_bytes(8, "little", signed=True))
        for part in (parts,) if isinstance(parts, str) else parts:
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return int.from_bytes(h.digest(), "little", signed=True)


def branch_thread(thread: str, k: int | str) -> str:
    name = f"{thread}.{k}"
    if len(name) <= MAX_THREAD:
        return name
    return "b" + hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


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
    query: Query | None = field(default=None, repr=False)
    """how "new" only: what the shared index needs to place the call (its keys)."""


@dataclass(frozen=True, slots=True)
class Query:
    """A call the replica's own index could not place, as keys for the shared index: chat, its chain
    and the hand-off key of its last message; text, its block chain and its last WINDOW_BLOCKS blocks
    of text (from block `start`)."""

    chat: bool
    chain: tuple[int, ...]
    handoff: int | None = None
    window: str = ""
    start: int = 0


class ConversationIndex:
    """Fingerprints of recent replies -> (program, thread); see the module doc for the rules."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS, key: bytes | None = None,
                 publish: Callable[[list[Entry]], None] | None = None) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_keys = max_keys
        self.hash = Hasher(key)
        self.publish = publish
        """Called with the links each finished call adds (a shared index keeps them too)."""
        self.states: OrderedDict[int, _Slot] = OrderedDict()
        self.replies: OrderedDict[int, _Reply] = OrderedDict()
        """Reply-text key -> the program and thread that wrote it (rule 2)."""

    # -- arriving calls ----------------------------------------------------------------------------

    def infer_chat(self, owner: str | None, messages: object) -> Inference:
        if not isinstance(messages, list) or not messages:
            raise MalformedMessages("messages: must be a non-empty list of message objects")
        h = self.hash
        seed = h(0, ("chat", repr(owner)))
        chain = [seed]
        key = seed
        for i, message in enumerate(messages):
            key = h(key, fingerprint(message, i))
            chain.append(key)
        last = messages[-1]
        text = _text(last.get("content"), "messages[-1]") if isinstance(last, dict) else ""
        handoff = self._reply_key(seed, text) if len(text) >= HANDOFF_MIN else None
        found = self.match_chat(seed, chain, handoff)
        if found is not None:
            return found
        return Inference(self._new_id(), "0", "new", seed, chain[-1],
                         query=Query(True, tuple(chain), handoff))

    def match_chat(self, seed: int, chain: list[int] | tuple[int, ...], handoff: int | None
                   ) -> Inference | None:
        """Rules 1 and 2 on a chat call's keys; None: a new program."""
        self._expire()
        for i in range(len(chain) - 1, 1, -1):  # a state holds at least a prompt and a reply
            slot = self.states.get(chain[i])
            if slot is not None:
                return self._extend(slot, chain[i], slot.states, seed, chain[-1])
        reply = self.replies.get(handoff) if handoff is not None else None
        if reply is not None and not reply.ambiguous:
            reply.handoffs += 1
            return Inference(reply.program_id, branch_thread(reply.thread, f"h{reply.handoffs}"),
                             "handoff", seed, chain[-1])
        return None

    def infer_text(self, owner: str | None, prompt: str) -> Inference:
        h = self.hash
        seed = h(0, ("text", repr(owner)))
        blocks = len(prompt) // BLOCK
        chain = [seed]
        for j in range(blocks):
            chain.append(h(chain[-1], prompt[j * BLOCK:(j + 1) * BLOCK]))
        found = self.match_text(seed, chain, prompt, 0)
        if found is not None:
            return found
        start = max(0, blocks - WINDOW_BLOCKS)
        query = Query(False, tuple(chain), window=prompt[start * BLOCK:], start=start)
        return Inference(self._new_id(), "0", "new", seed, chain[-1], prompt[blocks * BLOCK:], chat=False,
                         query=query)

    def match_text(self, seed: int, chain: list[int] | tuple[int, ...], text: str, start: int
                   ) -> Inference | None:
        """Rule 1 on a text prompt's block keys; `text` is the prompt from block `start` on (states
        before it are not looked at). None: a new program."""
        self._expire()
        blocks = len(chain) - 1
        for j in range(blocks, start - 1, -1):
            slot = self.states.get(chain[j])
            if slot is None:
                continue
            rest = text[(j - start) * BLOCK:]
            fitting = [s for s in slot.states if rest.startswith(s.tail)]
            if fitting:
                longest = max(len(s.tail) for s in fitting)
                fitting = [s for s in fitting if len(s.tail) == longest]
                return self._extend(slot, chain[j], fitting, seed, chain[-1],
                                    text[(blocks - start) * BLOCK:])
        return None

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

    def _reply_key(self, seed: int, text: str) -> int:
        return self.hash(seed, ("reply", text))

    @staticmethod
    def _new_id() -> str:
        return "conv-" + secrets.token_hex(8)

    # -- finished calls ----------------------------------------------------------------------------

    def replied(self, inference: Inference, replies: list[Any]) -> None:
        """Remember the states the call's replies leave (chat: assistant messages; text: strings)."""
        program, thread = inference.program_id, inference.thread
        links: list[Entry] = []
        for reply in replies:
            if inference.chat:
                try:
                    key = self.hash(inference.prefix, fingerprint(reply, "reply"))
                except MalformedMessages:
                    continue
                links.append(("state", key, program, thread, ""))
                try:
                    text = _text(reply.get("content"), "reply")
                except MalformedMessages:
                    continue
                if len(text) >= HANDOFF_MIN:
                    links.append(("reply", self._reply_key(inference.seed, text), program, thread, ""))
            elif isinstance(reply, str):
                full, key = inference.rest + reply, inference.prefix
                while len(full) >= BLOCK:
                    key = self.hash(key, full[:BLOCK])
                    full = full[BLOCK:]
                links.append(("state", key, program, thread, full))
        self.learn(links)
        if links and self.publish is not None:
            self.publish(links)

    def learn(self, links: list[Entry]) -> None:
        """Keep these links (a finished call's, here or, in a shared index, any replica's)."""
        now = self.clock()
        for kind, key, program, thread, tail in links:
            if kind == "state":
                self._add(key, _State(program, thread, tail), now)
            else:
                self._remember_reply(key, program, thread, now)
        self._expire()

    def links(self) -> list[Entry]:
        """Every link kept (for a shared index that lost its copy), oldest first."""
        out: list[Entry] = [("state", key, s.program_id, s.thread, s.tail)
                            for key, slot in self.states.items() for s in slot.states]
        out += [("reply", key, r.program_id, r.thread, "") for key, r in self.replies.items()
                if not r.ambiguous]
        return out

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

    def _remember_reply(self, key: int, program: str, thread: str, now: float) -> None:
        known = self.replies.get(key)
        if known is None:
            self.replies[key] = _Reply(program, thread, now)
            return
        known.ambiguous |= known.program_id != program
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
