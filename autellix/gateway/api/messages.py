"""The Anthropic Messages API (POST /v1/messages: Claude Code, the `anthropic` SDKs; vLLM serves it).

Conversation: the `system` field (a string or text blocks) and the `messages` list, each message's
content a string or a list of content blocks. For the conversation index they are normalised to chat
messages (`to_chat`), so Messages calls live in the same index as chat calls:
- a text block contributes its text; `thinking` / `redacted_thinking` blocks, `cache_control` and every
  other field are ignored (clients move cache breakpoints and drop thinking between turns);
- a `tool_use` block is a tool call (its id and name); a message with `tool_result` blocks is one tool
  message (the results' texts, its `tool_call_id` the results' ids joined);
- other blocks (images, documents) contribute their type and `source`;
- a system block whose text starts with `x-anthropic-billing-header` is dropped: Claude Code sends one
  first, and its content changes with each release.
Blocks that are not objects with a string `type`, and texts that are not strings, are MalformedMessages
(400 in Anthropic's shape), as are a `messages` that is not a non-empty list and a message without a
role. A reply is the assistant message of the answer's content blocks, normalised the same way.

Usage: Anthropic's `input_tokens` excludes prompt-cache reads and writes; the prompt is their sum, and
`cache_read_input_tokens` are the cached tokens. Streams: `message_start` carries the input side,
`message_delta` the final output count; `message_stop` ends the stream. Errors: Anthropic's shape, and
engine errors in OpenAI's shape (vLLM's request validation) are rewritten to it.
"""

from __future__ import annotations

import json
from typing import Any

from autellix.gateway.api.base import (
    Answer,
    Event,
    StreamReader,
    Usage,
    WireFormat,
    history_chars,
    json_or_none,
    text_chars,
)
from autellix.gateway.conversations import ConversationIndex, Inference, MalformedMessages
from autellix.gateway.errors import anthropic_body

BILLING_PREFIX = "x-anthropic-billing-header"
_IGNORED = frozenset({"thinking", "redacted_thinking"})


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _result_text(content: object, where: str) -> str:
    """A tool_result's content: a string, or blocks (texts joined; others by type)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise MalformedMessages(f"{where}.content: must be a string or a list of blocks")
    return "".join(_block_text(b, f"{where}.content[{j}]") for j, b in enumerate(content))


def _block_text(block: object, where: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise MalformedMessages(f"{where}: must be an object with a string `type`")
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise MalformedMessages(f"{where}.text: must be a string")
        return text
    if kind in _IGNORED:
        return ""
    return f"[{kind}:{json.dumps(block.get('source'), sort_keys=True, default=str)}]"


def message_to_chat(message: object, where: str) -> dict[str, Any]:
    """One Messages-API message as a chat message (module doc); raises MalformedMessages."""
    if not isinstance(message, dict):
        raise MalformedMessages(f"{where}: must be an object, got {type(message).__name__}")
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str) or not role:
        raise MalformedMessages(f"{where}.role: must be a non-empty string")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise MalformedMessages(f"{where}.content: must be a string or a list of content blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[str] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use":
            calls.append({"id": str(block.get("id", "")), "function": {"name": str(block.get("name", ""))}})
        elif kind == "tool_result":
            results.append(str(block.get("tool_use_id", "")))
            texts.append(_result_text(block.get("content"), at))
        else:
            texts.append(_block_text(block, at))
    if results:
        return {"role": "tool", "content": "".join(texts), "tool_call_id": ",".join(results)}
    return {"role": role, "content": "".join(texts), "tool_calls": calls}


def _plain(message: object) -> dict[str, Any] | None:
    """The common message, one text (a string or a single text block), as a chat message; None for any
    other (message_to_chat reads it). A fast path with message_to_chat's result: it runs for every
    message of every call's history, whose block loop and error labels cost ~1 us a message."""
    if not isinstance(message, dict):
        return None
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str) or not role:
        return None
    if isinstance(content, list) and len(content) == 1:
        block = content[0]
        content = block.get("text") if isinstance(block, dict) and block.get("type") == "text" else None
    return {"role": role, "content": content} if isinstance(content, str) else None


def to_chat(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The call's system prompt and messages as chat messages (module doc); raises MalformedMessages."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedMessages("messages: must be a non-empty list of message objects")
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, list):
        kept = [b for b in system if not (isinstance(b, dict) and isinstance(b.get("text"), str)
                                          and b["text"].startswith(BILLING_PREFIX))]
        system = "".join(_block_text(b, f"system[{j}]") for j, b in enumerate(kept))
    elif system is not None and not isinstance(system, str):
        raise MalformedMessages("system: must be a string or a list of text blocks")
    if system:
        out.append({"role": "system", "content": system})
    out += [_plain(m) or message_to_chat(m, f"messages[{i}]") for i, m in enumerate(messages)]
    return out


class MessagesReplies:
    """Assembles the assistant message of a streamed answer from its blocks (texts, tool uses)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls: list[dict[str, Any]] = []

    def add(self, data: object) -> None:
        if not isinstance(data, dict):
            return
        if data.get("type") == "content_block_start":
            block = data.get("content_block")
            if isinstance(block, dict):
                if block.get("type") == "tool_use":
                    self.calls.append({"id": str(block.get("id", "")),
                                       "function": {"name": str(block.get("name", ""))}})
                elif isinstance(block.get("text"), str):
                    self.texts.append(block["text"])
        elif data.get("type") == "content_block_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(
                    delta.get("text"), str):
                self.texts.append(delta["text"])

    def replies(self) -> list[Any]:
        return [{"role": "assistant", "content": "".join(self.texts), "tool_calls": self.calls}]


def _usage(usage: object, base: Usage | None = None) -> Usage | None:
    """An Anthropic usage object (fields absent keep `base`'s values) -> Usage."""
    if not isinstance(usage, dict):
        return base
    base = base or Usage()
    fresh = any(k in usage for k in ("input_tokens", "cache_read_input_tokens",
                                     "cache_creation_input_tokens"))
    cached = _count(usage.get("cache_read_input_tokens")) if fresh else base.cached_tokens
    prompt = (_count(usage.get("input_tokens")) + cached + _count(usage.get("cache_creation_input_tokens"))
              if fresh else base.prompt_tokens)
    out = _count(usage.get("output_tokens")) if "output_tokens" in usage else base.completion_tokens
    return Usage(prompt, out, cached)


class MessagesStream(StreamReader):
    """One streamed answer: `event: <type>` / `data: {...}` events; every event is parsed (a token's
    `content_block_delta` only when replies are collected)."""

    def __init__(self, replies: MessagesReplies | None) -> None:
        self.usage: Usage | None = None
        self._replies = replies
        self._deltas = 0

    def event(self, event: bytes) -> Event:
        start = event.find(b"data:")
        if start < 0:
            return Event.FRAME
        kind = event[:start]
        if b"content_block_delta" in kind:
            self._deltas += 1
            if self._replies is not None:
                self._replies.add(json_or_none(event[start + 5:]))
            return Event.CONTENT
        if b"message_stop" in kind:
            return Event.DONE
        data = json_or_none(event[start + 5:])
        if not isinstance(data, dict):
            return Event.CONTENT
        kind_name = data.get("type")
        if kind_name == "message_start" and isinstance(data.get("message"), dict):
            self.usage = _usage(data["message"].get("usage"), self.usage)
        elif kind_name == "message_delta":
            self.usage = _usage(data.get("usage"), self.usage)
        elif kind_name == "content_block_start" and self._replies is not None:
            self._replies.add(data)
        elif kind_name == "error":
            return Event.CONTENT
        if kind_name == "content_block_delta":  # an engine that sends no `event:` line
            self._deltas += 1
            if self._replies is not None:
                self._replies.add(data)
            return Event.CONTENT
        if kind_name == "message_stop":
            return Event.DONE
        if self.usage is not None and self._deltas > self.usage.completion_tokens:
            self.usage = Usage(self.usage.prompt_tokens, self._deltas, self.usage.cached_tokens)
        return Event.FRAME

    def replies(self) -> list[Any]:
        return self._replies.replies() if self._replies is not None else []


class Messages(WireFormat):
    path = "/v1/messages"
    errors = "anthropic"

    def infer(self, index: ConversationIndex, owner: str | None, body: dict[str, Any]) -> Inference:
        return index.infer_chat(owner, to_chat(body))

    def prompt_tokens(self, body: dict[str, Any], chars_per_token: float) -> int:
        """Characters of the system prompt and message texts / chars_per_token, plus 4 per message."""
        messages = body.get("messages")
        n = len(messages) if isinstance(messages, list) else 0
        chars = text_chars(body.get("system")) + history_chars(messages, ("content",))
        return int(chars / chars_per_token) + 4 * n

    def read_answer(self, payload: bytes, collect_replies: bool) -> Answer:
        data = json_or_none(payload)
        if not isinstance(data, dict):
            return Answer()
        replies: list[Any] = []
        if collect_replies and isinstance(data.get("content"), list):
            try:
                replies = [message_to_chat({"role": "assistant", "content": data["content"]}, "reply")]
            except MalformedMessages:
                replies = []
        return Answer(_usage(data.get("usage")), replies)

    def stream_reader(self, collect_replies: bool) -> MessagesStream:
        return MessagesStream(MessagesReplies() if collect_replies else None)

    def engine_error(self, status: int, payload: bytes) -> bytes:
        """OpenAI-shaped engine errors (vLLM's request validation) -> Anthropic's shape."""
        data = json_or_none(payload)
        if isinstance(data, dict) and data.get("type") == "error":
            return payload
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            return json.dumps(anthropic_body(status, str(error.get("message", "")))).encode()
        if isinstance(data, dict) and isinstance(data.get("detail"), (str, list)):
            return json.dumps(anthropic_body(status, json.dumps(data["detail"])[:2000])).encode()
        return payload


MESSAGES = Messages()
