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
by its completion. What "the same message" means: autellix.gateway.fingerprints.

Keys. Messages are hashed once per call into a chain c_i = H(c_(i-1), message_i), seeded by the owner;
text prompts are chained in blocks of BLOCK characters, and a text state keeps its tail past the last
block boundary, compared exactly. Locally H is Python's own tuple hash over SipHash-hashed strings (in
C, randomised per process: a client cannot aim for collisions); keys are 64 bits, so two different
histories share a key with probability ~ keys^2 / 2^64, below 1e-9 at the index's capacity.

Shared across replicas (`publish` given: a deployment's store keeps every replica's links, and places a
call no replica's own index placed: autellix.deploy.program_store): links are published under *stable*
keys (keyed BLAKE2b, fingerprints.Hasher, with the deployment's key), the same in every replica. Each
local state keeps its stable key, so a call extending a state hashes only its new messages stably; a
call the local index cannot place (it would open a new program) is hashed stably in full and sent as a
`Query`. A single gateway computes no stable key. Within one conversation every state names the same
program, so a replica that saw an older state of it still finds the right program (only thread labels
may differ from what the shared index would say).

Invariants: memory is bounded (at most MAX_KEYS states and MAX_KEYS replies, least recently used first
out, none kept past the TTL); a state names the program and thread of the call whose reply made it, and
`claims` counts the calls that extended it (a failed call gives its claim back if it was the last, so a
retry continues where the failed call would have).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autellix.gateway.fingerprints import Hasher, MalformedMessages, fingerprint, message_text

BLOCK = 1024
"""Characters per chained block of a text prompt."""
HANDOFF_MIN = 64
"""Shortest reply text that links a new conversation to the program that wrote it (rule 2)."""
MAX_KEYS = 1 << 17
MAX_PER_KEY = 16
"""Programs kept under one fingerprint (identical histories in different programs); oldest out."""
MAX_THREAD = 64
WINDOW_BLOCKS = 8
"""Text prompts placed by the shared index: states at most this many blocks before the prompt's end."""

Entry = tuple[str, int, str, str, str]
"""A published link, by stable key: ("state", key, program, thread, tail) or ("reply", key, program,
thread, "")."""

__all__ = ["BLOCK", "HANDOFF_MIN", "ConversationIndex", "Entry", "Inference", "MalformedMessages", "Query",
           "branch_thread", "fingerprint"]


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
    stable: int | None = None
    """The slot's stable key (shared indexes only)."""


@dataclass(slots=True)
class _Reply:
    program_id: str
    thread: str
    used: float
    ambiguous: bool = False
    """Two programs wrote this text: it links nothing."""
    handoffs: int = 0
    stable: int | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """A call the replica's own index could not place, by stable keys, for the shared index: chat, its
    chain and the hand-off key of its last message; text, its block chain and its prompt from block
    `start` (at most WINDOW_BLOCKS blocks before its end)."""

    chat: bool
    chain: tuple[int, ...]
    handoff: int | None = None
    window: str = ""
    start: int = 0


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
    stable: tuple[int, int] | None = field(default=None, repr=False)
    """Shared indexes: (stable seed, stable chain value after the prompt)."""
    query: Query | None = field(default=None, repr=False)
    """how "new" in a shared index: the call, for the shared index to place."""


class ConversationIndex:
    """Fingerprints of recent replies -> (program, thread); see the module doc for the rules. Keys are
    per process, or (a store's index: `learn` and `match_*` only) the stable keys replicas send."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS, key: bytes | None = None,
                 publish: Callable[[list[Entry]], None] | None = None) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_keys = max_keys
        self.publish = publish
        """Called with the links each finished call adds, by stable key (None: a single gateway)."""
        self.stable = Hasher(key) if publish is not None else None
        self.states: OrderedDict[int, _Slot] = OrderedDict()
        self.replies: OrderedDict[int, _Reply] = OrderedDict()
        """Reply-text key -> the program and thread that wrote it (rule 2)."""
        self._matched, self._matched_stable = 0, 0
        """The last rule 1 match: messages (or blocks) its state covers, and its stable key."""

    # -- arriving calls ----------------------------------------------------------------------------

    def infer_chat(self, owner: str | None, messages: object) -> Inference:
        if not isinstance(messages, list) or not messages:
            raise MalformedMessages("messages: must be a non-empty list of message objects")
        seed = hash(("chat", owner))
        prints = [fingerprint(message, i) for i, message in enumerate(messages)]
        chain = [seed]
        key = seed
        for p in prints:
            key = hash((key, p))
            chain.append(key)
        last = messages[-1]
        text = message_text(last.get("content"), "messages[-1]") if isinstance(last, dict) else ""
        handoff = hash((seed, "reply", text)) if len(text) >= HANDOFF_MIN else None
        found = self.match_chat(seed, chain, handoff)
        if self.stable is None:
            return found or Inference(self._new_id(), "0", "new", seed, chain[-1])
        h = self.stable
        stable_seed = h(0, ("chat", repr(owner)))
        at = found.claimed[0] if found is not None and found.claimed is not None else None
        start, value = (self._matched, self._matched_stable) if at is not None else (0, stable_seed)
        stable = [value]
        for p in prints[start:]:
            stable.append(h(stable[-1], p))
        if found is not None:
            found.stable = (stable_seed, stable[-1])
            return found
        stable_handoff = h(stable_seed, ("reply", text)) if handoff is not None else None
        return Inference(self._new_id(), "0", "new", seed, chain[-1], stable=(stable_seed, stable[-1]),
                         query=Query(True, tuple(stable), stable_handoff))

    def match_chat(self, seed: int, chain: list[int] | tuple[int, ...], handoff: int | None
                   ) -> Inference | None:
        """Rules 1 and 2 on a chat call's keys; None: a new program. After a rule 1 match, `_matched`
        is the number of messages the state covers (and `_matched_stable` its stable key)."""
        self._expire()
        for i in range(len(chain) - 1, 1, -1):  # a state holds at least a prompt and a reply
            slot = self.states.get(chain[i])
            if slot is not None and (self.stable is None or slot.stable is not None):
                self._matched, self._matched_stable = i, slot.stable or 0
                return self._extend(slot, chain[i], slot.states, seed, chain[-1])
        reply = self.replies.get(handoff) if handoff is not None else None
        if reply is not None and not reply.ambiguous:
            reply.handoffs += 1
            return Inference(reply.program_id, branch_thread(reply.thread, f"h{reply.handoffs}"),
                             "handoff", seed, chain[-1])
        return None

    def infer_text(self, owner: str | None, prompt: str) -> Inference:
        seed = hash(("text", owner))
        blocks = len(prompt) // BLOCK
        chain = [seed]
        for j in range(blocks):
            chain.append(hash((chain[-1], prompt[j * BLOCK:(j + 1) * BLOCK])))
        found = self.match_text(seed, chain, prompt, 0)
        rest = prompt[blocks * BLOCK:]
        if self.stable is None:
            return found or Inference(self._new_id(), "0", "new", seed, chain[-1], rest, chat=False)
        h = self.stable
        stable_seed = h(0, ("text", repr(owner)))
        start, value = (self._matched, self._matched_stable) if found is not None else (0, stable_seed)
        stable = [value]
        for j in range(start, blocks):
            stable.append(h(stable[-1], prompt[j * BLOCK:(j + 1) * BLOCK]))
        if found is not None:
            found.stable = (stable_seed, stable[-1])
            return found
        first = max(0, blocks - WINDOW_BLOCKS)
        query = Query(False, tuple(stable), window=prompt[first * BLOCK:], start=first)
        return Inference(self._new_id(), "0", "new", seed, chain[-1], rest, chat=False,
                         stable=(stable_seed, stable[-1]), query=query)

    def match_text(self, seed: int, chain: list[int] | tuple[int, ...], text: str, start: int
                   ) -> Inference | None:
        """Rule 1 on a text prompt's block keys; `text` is the prompt from block `start` on (states
        before it are not looked at). None: a new program."""
        self._expire()
        blocks = len(chain) - 1
        for j in range(blocks, start - 1, -1):
            slot = self.states.get(chain[j])
            if slot is None or (self.stable is not None and slot.stable is None):
                continue
            rest = text[(j - start) * BLOCK:]
            fitting = [s for s in slot.states if rest.startswith(s.tail)]
            if fitting:
                longest = max(len(s.tail) for s in fitting)
                fitting = [s for s in fitting if len(s.tail) == longest]
                self._matched, self._matched_stable = j, slot.stable or 0
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

    @staticmethod
    def _new_id() -> str:
        return "conv-" + secrets.token_hex(8)

    # -- finished calls ----------------------------------------------------------------------------

    def replied(self, inference: Inference, replies: list[Any]) -> None:
        """Remember the states the call's replies leave (chat: assistant messages; text: strings), and
        publish them by stable key (shared indexes)."""
        program, thread, now = inference.program_id, inference.thread, self.clock()
        h, stable = self.stable, inference.stable
        shared = h is not None and stable is not None
        links: list[Entry] = []
        for reply in replies:
            if inference.chat:
                try:
                    p = fingerprint(reply, "reply")
                    text = message_text(reply.get("content"), "reply")
                except MalformedMessages:
                    continue
                key = hash((inference.prefix, p))
                stable_key = h(stable[1], p) if shared else None
                self._add(key, _State(program, thread), now, stable_key)
                if len(text) >= HANDOFF_MIN:
                    stable_reply = h(stable[0], ("reply", text)) if shared else None
                    self._remember_reply(hash((inference.seed, "reply", text)), program, thread, now,
                                         stable_reply)
                    if stable_reply is not None:
                        links.append(("reply", stable_reply, program, thread, ""))
            elif isinstance(reply, str):
                full, key = inference.rest + reply, inference.prefix
                stable_key = stable[1] if shared else None
                while len(full) >= BLOCK:
                    key = hash((key, full[:BLOCK]))
                    stable_key = h(stable_key, full[:BLOCK]) if stable_key is not None else None
                    full = full[BLOCK:]
                self._add(key, _State(program, thread, tail=full), now, stable_key)
            else:
                continue
            if stable_key is not None:
                links.append(("state", stable_key, program, thread, "" if inference.chat else full))
        self._expire()
        if links and self.publish is not None:
            self.publish(links)

    def learn(self, links: list[Entry]) -> None:
        """Keep these links under the keys given (a store's shared index: any replica's, stable)."""
        now = self.clock()
        for kind, key, program, thread, tail in links:
            if kind == "state":
                self._add(key, _State(program, thread, tail), now)
            else:
                self._remember_reply(key, program, thread, now)
        self._expire()

    def links(self) -> list[Entry]:
        """Every link kept, by stable key (republished to a store that lost its copy)."""
        out: list[Entry] = [("state", slot.stable, s.program_id, s.thread, s.tail)
                            for slot in self.states.values() if slot.stable is not None for s in slot.states]
        out += [("reply", r.stable, r.program_id, r.thread, "") for r in self.replies.values()
                if r.stable is not None and not r.ambiguous]
        return out

    def failed(self, inference: Inference) -> None:
        """The call got no reply: give its claim back if no later call claimed after it."""
        if inference.claimed is not None:
            state, k = inference.claimed
            if state.claims == k + 1:
                state.claims = k

    def _add(self, key: int, state: _State, now: float, stable: int | None = None) -> None:
        slot = self.states.get(key)
        if slot is None:
            self.states[key] = _Slot([state], now, stable)
            return
        slot.states.append(state)
        del slot.states[:-MAX_PER_KEY]
        slot.used = now
        slot.stable = slot.stable if stable is None else stable
        self.states.move_to_end(key)

    def _remember_reply(self, key: int, program: str, thread: str, now: float,
                        stable: int | None = None) -> None:
        known = self.replies.get(key)
        if known is None:
            self.replies[key] = _Reply(program, thread, now, stable=stable)
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
