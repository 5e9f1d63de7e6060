"""The seam between the gateway and an API's wire format: what the gateway needs from each API it
serves (chat completions, text completions; later the Anthropic Messages API, the OpenAI Responses API).

A WireFormat is shared by all calls of one gateway (stateless, except the Responses API's store of the
answers it served); a StreamReader lives for one streamed answer, a Turn for one call. The
gateway itself never looks inside a body or a payload: it parses a request body once (a JSON object,
autellix.gateway.bodies) and hands it to its WireFormat, which reads what the gateway needs from it and
from the engine's answer.

Invariants every WireFormat keeps:
- An engine's complete answer is parsed once (`read_answer`), and each streamed event at most once
  (`StreamReader.event`); engine output that is not JSON is never an error of the call.
- `prepare` is the only change to the client's body before it goes to the engine: it asks the engine
  for usage (so the call can be charged), adds the program context (`vllm_xargs`) and drops the fields
  the gateway reads for itself (`priority`: autellix.gateway.classes), through `engine_body`.
- Replies are returned in the shape a client sends them back in its next call (the conversation index,
  autellix.gateway.conversations, matches them): chat messages for chat APIs (other APIs' messages are
  normalised to chat messages by their module), strings for text ones.
- Errors the gateway answers itself on an API's route are in that API's shape (`errors`).
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from autellix.gateway.classes import drop_engine_fields
from autellix.gateway.conversations import ConversationIndex, Inference
from autellix.policy.config import PolicyConfig


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts an engine reported for one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache (not computed)."""

    def service(self, policy: PolicyConfig) -> float:
        """The call's service by the policy core's formula (PolicyConfig.service)."""
        return policy.service(self.completion_tokens, max(0, self.prompt_tokens - self.cached_tokens))


@dataclass(slots=True)
class Answer:
    """What the gateway keeps of an engine's complete answer."""

    usage: Usage | None = None
    replies: list[Any] = field(default_factory=list)
    """Only collected when asked for (programs inferred from their conversation)."""
    record: Any = None
    """What a stateful API keeps of a successful answer (the Responses API: its response object)."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request body as it goes to the engine."""

    content: bytes
    stream: bool
    wants_usage: bool
    """The client asked for usage in its stream itself (else the usage event is stripped)."""


class Event(enum.Enum):
    """What one SSE event of a streamed answer is, for the relay."""

    CONTENT = "content"
    """A content event (tokens, or an error): forwarded, and timed for step-time estimates."""
    USAGE = "usage"
    """An event carrying only usage: forwarded only when the client asked for usage."""
    DONE = "done"
    """The end of the stream (OpenAI's `data: [DONE]`, Anthropic's `message_stop`, the Responses API's
    `response.completed`): forwarded, after the call is charged."""
    FRAME = "frame"
    """A framing event (a message or block starting or stopping, a ping): forwarded, not timed."""


class StreamReader(ABC):
    """Reads one streamed answer, event by event (one event: the bytes between blank lines)."""

    usage: Usage | None = None
    record: Any = None
    """As Answer.record, once the stream has ended well."""

    @abstractmethod
    def event(self, event: bytes) -> Event:
        """Classify one event; record its usage and, when collecting, its part of the replies."""

    @abstractmethod
    def replies(self) -> list[Any]:
        """The replies of the stream so far (empty unless collecting)."""


class Turn(ABC):
    """One call of a stateful API (the Responses API): what it continues, and what it leaves."""

    chained: tuple[str, str] | None = None
    """(program, thread) of the answer the call continues (`previous_response_id`): an identity source."""

    @abstractmethod
    def answered(self, record: Any, program_id: str | None, thread: str) -> None:
        """The call succeeded with `record` (Answer.record): keep what later calls may continue."""


class WireFormat(ABC):
    """One API's request and answer format (see the module doc for the invariants)."""

    path: ClassVar[str]
    """The route it serves, e.g. "/v1/chat/completions" (the engine serves the same path)."""
    errors: ClassVar[str] = "openai"
    """The shape of errors on its route (autellix.gateway.errors.SHAPES)."""

    def begin(self, body: dict[str, Any], owner: str | None) -> Turn | None:
        """Before identity: a stateful API resolves what the call continues (and may rewrite `body`, e.g.
        expand a stored history); raises GatewayError (404: unknown id). Stateless APIs: None."""
        return None

    def engine_error(self, status: int, payload: bytes) -> bytes:
        """An engine's error answer on this route, in the API's error shape (as is by default)."""
        return payload

    @abstractmethod
    def infer(self, index: ConversationIndex, owner: str | None, body: dict[str, Any]) -> Inference | None:
        """The program its conversation belongs to (autellix.gateway.conversations); None when the call
        cannot be matched (a batch, token ids). Raises MalformedMessages for an unreadable conversation."""

    @abstractmethod
    def prompt_tokens(self, body: dict[str, Any], chars_per_token: float) -> int:
        """A rough prompt size for the balancer, before the engine has tokenized anything."""

    def prepare(self, body: dict[str, Any], context: dict[str, str | float], priority: int = 0) -> Prepared:
        """The body for the engine: usage requested, `context` (program xargs; may be empty) and vLLM's
        `priority` (when not 0: stock engines) added. By default for APIs whose every answer carries its
        usage (Messages, Responses)."""
        return Prepared(engine_body(body, context, priority), body.get("stream") is True, True)

    @abstractmethod
    def read_answer(self, payload: bytes, collect_replies: bool) -> Answer:
        """A complete (non-streamed) successful answer: its usage and, when asked, its replies."""

    @abstractmethod
    def stream_reader(self, collect_replies: bool) -> StreamReader:
        """A reader for one streamed answer."""


def json_or_none(raw: bytes) -> object:
    """`raw` parsed as JSON, or None when it is not JSON (engine answers, SSE events: never an error)."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def engine_body(body: dict[str, Any], context: dict[str, str | float], priority: int = 0) -> bytes:
    """The body an engine gets, serialised once: the program context merged into `vllm_xargs` (every API
    vLLM serves takes it; docs/gateway.md, "What the engine receives"), the client's `priority` removed
    (its class is in the context: autellix.gateway.classes) and the gateway's own, when not 0, set."""
    drop_engine_fields(body)
    if priority:
        body["priority"] = priority
    if context:
        xargs = body.get("vllm_xargs")
        body["vllm_xargs"] = {**(xargs if isinstance(xargs, dict) else {}), **context}
    return json.dumps(body, separators=(",", ":")).encode()


def text_chars(value: object, keys: tuple[str, ...] = ("text", "content")) -> int:
    """Characters of the texts in a string, a list, or the `keys` of objects, nested (size estimates)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_chars(v, keys) for v in value)
    if isinstance(value, dict):
        return sum(text_chars(value.get(k), keys) for k in keys)
    return 0


def history_chars(entries: object, keys: tuple[str, ...]) -> int:
    """Characters of the texts of a list of messages or items (size estimates): under each entry's `keys`,
    a string, or parts whose string `text` counts (other parts, and anything else: text_chars). One flat
    loop over the two common levels, since it runs on every call over every entry of its history."""
    if not isinstance(entries, list):
        return text_chars(entries, keys)
    total = 0
    for entry in entries:
        if not isinstance(entry, dict):
            total += text_chars(entry, keys)
            continue
        for key in keys:
            value = entry.get(key)
            if isinstance(value, str):
                total += len(value)
            elif isinstance(value, list):
                for part in value:
                    text = part.get("text") if isinstance(part, dict) else None
                    total += len(text) if isinstance(text, str) else text_chars(part)
            elif value is not None:
                total += text_chars(value)
    return total
