"""The OpenAI Responses API (POST /v1/responses: Codex, the OpenAI Agents SDK's default model; vLLM
serves it), with its state owned by the gateway (autellix.gateway.response_store).

State: a call with `previous_response_id` continues a response this gateway served to the same owner
(else 404 in OpenAI's shape); the gateway replaces that field by the whole history (the stored chain's
items, then the call's own input), so engines get stateless requests and any engine can take any turn.
A successful answer is stored unless the call says `store: false`. The engine's response object is
relayed as it is (its `previous_response_id` is null: the engine never saw one).

Conversation (for the conversation index, normalised to chat messages by `items_to_chat`): `instructions` is
a system message; a string `input` is one user message; input items: a `message` item (role, its text
parts joined) is a message; consecutive assistant-side items (assistant messages, `*_call` items,
reasoning ignored) are one assistant message whose tool calls are the calls' `call_id`s and names, as
an answer's output items are its one reply; a `*_call_output` item is a tool message. Items that are
not objects, and text parts that are not strings, are MalformedMessages (400).

Usage: `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`. Streams: `event:` /
`data:` events; `*.delta` events are content; `response.completed` (or `.incomplete`, `.failed`)
carries the whole response, usage included, and ends the stream; every other event is framing.
"""

from __future__ import annotations

import json
from typing import Any

from autellix.gateway.api.base import (
    Answer,
    Event,
    StreamReader,
    Turn,
    Usage,
    WireFormat,
    history_chars,
    json_or_none,
    text_chars,
)
from autellix.gateway.conversations import ConversationIndex, Inference, MalformedMessages, branch_thread
from autellix.gateway.errors import GatewayError
from autellix.gateway.response_store import ResponseStore, Stored

_ITEM_TEXT = ("content", "output", "arguments")
"""Fields of Responses input items that hold text, a string or parts (size estimates)."""

_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
_KEPT = frozenset({"completed", "incomplete"})


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(_count(usage.get("input_tokens")), _count(usage.get("output_tokens")), cached)


def _text(content: object, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise MalformedMessages(f"{where}: must be a string or a list of content parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise MalformedMessages(f"{where}[{j}]: must be an object with a string `type`")
        kind = part["type"]
        if kind in _TEXT_PARTS or kind == "refusal":
            text = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise MalformedMessages(f"{where}[{j}].text: must be a string")
            texts.append(text)
        else:
            ref = part.get("image_url") or part.get("file_id") or part.get("file_url") or ""
            texts.append(f"[{kind}:{ref if isinstance(ref, str) else ''}]")
    return "".join(texts)


def _one_text(content: object) -> str | None:
    """The text of the common content, a string or a single text part; None for any other (`_text` reads
    it). A fast path with `_text`'s result: it runs for every message item of every call's history."""
    if isinstance(content, list) and len(content) == 1:
        part = content[0]
        content = part.get("text") if isinstance(part, dict) and part.get("type") in _TEXT_PARTS else None
    return content if isinstance(content, str) else None


def items_to_chat(items: list[Any], where: str = "input") -> list[dict[str, Any]]:
    """Input or output items as chat messages (module doc); raises MalformedMessages."""
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []

    def flush() -> None:
        if texts or calls:
            out.append({"role": "assistant", "content": "".join(texts), "tool_calls": list(calls)})
            texts.clear()
            calls.clear()

    for i, item in enumerate(items):
        # labels (f"{where}[{i}]") only on the error paths: this loop runs over every item of every call
        if not isinstance(item, dict):
            raise MalformedMessages(f"{where}[{i}]: must be an object, got {type(item).__name__}")
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise MalformedMessages(f"{where}[{i}].type: must be a string")
        if kind == "reasoning":
            continue
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or not role:
                raise MalformedMessages(f"{where}[{i}].role: must be a non-empty string")
            text = _one_text(item.get("content"))
            if text is None:
                text = _text(item.get("content"), f"{where}[{i}].content")
            if role == "assistant":
                texts.append(text)
                continue
            flush()
            out.append({"role": role, "content": text})
        elif kind.endswith("_call"):
            calls.append({"id": str(item.get("call_id") or item.get("id") or ""),
                          "function": {"name": str(item.get("name") or kind)}})
        elif kind.endswith("_call_output"):
            flush()
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output, f"{where}[{i}].output") \
                if isinstance(output, list) else json.dumps(output, sort_keys=True, default=str)
            out.append({"role": "tool", "content": text, "tool_call_id": str(item.get("call_id", ""))})
        else:
            flush()
            out.append({"role": kind, "content": str(item.get("id") or "")})
    flush()
    return out


def input_items(value: object) -> list[Any]:
    """A request's `input` as a list of items (a string is one user message); 400 otherwise."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return value
    raise GatewayError(400, "input: must be a string or a list of input items", param="input")


class ResponsesTurn(Turn):
    """One Responses call: the stored response it continues, and whether its answer is kept."""

    def __init__(self, store: ResponseStore, owner: str | None, parent: Stored | None, own: list[Any],
                 keep: bool) -> None:
        self.store, self.owner, self.parent, self.own, self.keep = store, owner, parent, own, keep
        if parent is not None and parent.program_id is not None:
            k = parent.claims
            parent.claims += 1
            self.chained = (parent.program_id, parent.thread if k == 0 else branch_thread(parent.thread, k))

    def answered(self, record: Any, program_id: str | None, thread: str) -> None:
        if not self.keep or not isinstance(record, tuple):
            return
        response, raw = record
        rid, output = response.get("id"), response.get("output")
        if isinstance(rid, str) and isinstance(output, list) and response.get("status") in _KEPT:
            self.store.put(rid, self.owner, self.parent, [*self.own, *output], len(self.own), raw, program_id,
                           thread)


class ResponsesStream(StreamReader):
    """One streamed answer; only the event that ends it (the whole response) is parsed."""

    def __init__(self, collect: bool) -> None:
        self.usage: Usage | None = None
        self.collect = collect
        self._replies: list[Any] = []

    def event(self, event: bytes) -> Event:
        start = event.find(b"data:")
        if start < 0:
            return Event.FRAME
        head = event[:start] if start else event[:80]
        if b".delta" in head:
            return Event.CONTENT
        if b"response.completed" in head or b"response.incomplete" in head or b"response.failed" in head:
            data = json_or_none(event[start + 5:])
            response = data.get("response") if isinstance(data, dict) else None
            if isinstance(response, dict):
                self.usage = parse_usage(response.get("usage")) or self.usage
                self.record = (response, json.dumps(response, separators=(",", ":")).encode())
                if self.collect and isinstance(response.get("output"), list):
                    self._replies = _replies(response["output"])
            return Event.DONE
        if b"error" in head:
            return Event.CONTENT
        return Event.FRAME

    def replies(self) -> list[Any]:
        return self._replies


def _replies(output: list[Any]) -> list[Any]:
    try:
        return items_to_chat(output, "output")[:1]
    except MalformedMessages:
        return []


class Responses(WireFormat):
    path = "/v1/responses"

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    def begin(self, body: dict[str, Any], owner: str | None) -> ResponsesTurn | None:
        """Expands a `previous_response_id` call's input to the whole history (404: unknown id)."""
        previous = body.pop("previous_response_id", None)
        keep = body.get("store") is not False
        if previous is None and not keep:
            return None
        if previous is not None and (not isinstance(previous, str) or not previous):
            raise GatewayError(400, "previous_response_id: must be a non-empty string",
                               param="previous_response_id")
        own = input_items(body.get("input"))
        parent = None
        if previous is not None:
            parent = self.store.get(previous, owner)
            if parent is None:
                raise GatewayError(404, f"Previous response with id '{previous:.200}' not found.",
                                   param="previous_response_id")
            body["input"] = parent.history() + own
        return ResponsesTurn(self.store, owner, parent, own, keep)

    def infer(self, index: ConversationIndex, owner: str | None, body: dict[str, Any]) -> Inference:
        messages = []
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            messages.append({"role": "system", "content": instructions})
        value = body.get("input")
        if not isinstance(value, (str, list)):
            raise MalformedMessages("input: must be a string or a list of input items")
        messages += items_to_chat(input_items(value))
        return index.infer_chat(owner, messages)

    def prompt_tokens(self, body: dict[str, Any], chars_per_token: float) -> int:
        """Characters of the instructions and input texts / chars_per_token, plus 4 per item."""
        value = body.get("input")
        n = len(value) if isinstance(value, list) else 1
        chars = text_chars(body.get("instructions")) + history_chars(value, _ITEM_TEXT)
        return int(chars / chars_per_token) + 4 * n

    def read_answer(self, payload: bytes, collect_replies: bool) -> Answer:
        data = json_or_none(payload)
        if not isinstance(data, dict):
            return Answer()
        output = data.get("output")
        replies = _replies(output) if collect_replies and isinstance(output, list) else []
        return Answer(parse_usage(data.get("usage")), replies, (data, payload))

    def stream_reader(self, collect_replies: bool) -> ResponsesStream:
        return ResponsesStream(collect_replies)
