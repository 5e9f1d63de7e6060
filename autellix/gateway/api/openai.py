"""What OpenAI's two legacy generation APIs (chat completions, text completions) share on the wire: the
`usage` object, `stream_options.include_usage`, `vllm_xargs`, and streams of `data:` events ending in
`data: [DONE]`, usage arriving in a last `"choices": []` event. The two APIs differ only in their
conversation and their replies (autellix.gateway.api.chat, autellix.gateway.api.completions).

Usage: `cached_tokens` come from `usage.prompt_tokens_details.cached_tokens` when the engine reports
them (vLLM does with --enable-prompt-tokens-details); otherwise every prompt token counts as computed.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Protocol

from autellix.gateway.api.base import (
    Answer,
    Event,
    Prepared,
    StreamReader,
    Usage,
    WireFormat,
    engine_body,
    json_or_none,
)

_DONE = b"data: [DONE]"


class Replies(Protocol):
    """Assembles the replies of a stream from its chunks (each a parsed `data:` event, or None)."""

    def add(self, chunk: object) -> None: ...

    def replies(self) -> list[Any]: ...


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(usage: object) -> Usage | None:
    """An OpenAI `usage` object -> Usage; None when absent or not an object."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), cached)


def choices(data: object) -> list[dict[str, Any]]:
    """The well-formed entries of `data["choices"]` (none when it is missing or garbled)."""
    found = data.get("choices") if isinstance(data, dict) else None
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


class OpenAIStream(StreamReader):
    """One streamed answer. Only events mentioning "usage" are parsed (the common token chunk is
    forwarded without JSON work), unless the replies are collected, which needs every chunk."""

    def __init__(self, replies: Replies | None) -> None:
        self.usage: Usage | None = None
        self._replies = replies

    def event(self, event: bytes) -> Event:
        if event.startswith(_DONE):
            return Event.DONE
        data: object = None
        if self._replies is not None and event.startswith(b"data:"):
            data = json_or_none(event[5:])
            self._replies.add(data)
        if b'"usage"' in event and event.startswith(b"data:"):
            if data is None:
                data = json_or_none(event[5:])
            usage = parse_usage(data.get("usage")) if isinstance(data, dict) else None
            if usage is not None:
                self.usage = usage
                if isinstance(data, dict) and data.get("choices") == []:  # the usage-only chunk
                    return Event.USAGE
        return Event.CONTENT

    def replies(self) -> list[Any]:
        return self._replies.replies() if self._replies is not None else []


class OpenAIFormat(WireFormat):
    """The shared half of chat and text completions; subclasses say how replies look."""

    @abstractmethod
    def replies(self, data: object) -> list[Any]:
        """The replies of a complete answer (its parsed JSON)."""

    @abstractmethod
    def reply_builder(self) -> Replies:
        """Assembles the replies of a streamed answer."""

    def prepare(self, body: dict[str, Any], context: dict[str, str | float], priority: int = 0) -> Prepared:
        stream = body.get("stream") is True
        wants_usage = True
        if stream:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            wants_usage = bool(options.get("include_usage"))
            body["stream_options"] = {**options, "include_usage": True}
        return Prepared(engine_body(body, context, priority), stream, wants_usage)

    def read_answer(self, payload: bytes, collect_replies: bool) -> Answer:
        data = json_or_none(payload)
        if not isinstance(data, dict):
            return Answer()
        return Answer(parse_usage(data.get("usage")), self.replies(data) if collect_replies else [])

    def stream_reader(self, collect_replies: bool) -> OpenAIStream:
        return OpenAIStream(self.reply_builder() if collect_replies else None)
