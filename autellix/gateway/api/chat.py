"""OpenAI chat completions (POST /v1/chat/completions): the conversation is the `messages` list, a
reply is the assistant message, assembled from `delta`s (content and tool calls) when streamed."""

from __future__ import annotations

from typing import Any

from autellix.gateway.api.openai import OpenAIFormat, choices
from autellix.gateway.conversations import ConversationIndex, Inference


def _text_len(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict)
                   and isinstance(p.get("text"), str))
    return 0


class ChatReplies:
    """Assembles the assistant messages of a streamed chat answer from its deltas, tool calls included
    (ids and names: what the conversation index compares)."""

    def __init__(self) -> None:
        self.content: dict[int, list[str]] = {}
        self.calls: dict[int, dict[int, dict[str, str]]] = {}

    def add(self, chunk: object) -> None:
        for choice in choices(chunk):
            i, delta = choice.get("index", 0), choice.get("delta")
            if not isinstance(delta, dict):
                continue
            piece = delta.get("content")
            if isinstance(piece, str):
                self.content.setdefault(i, []).append(piece)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._add_call(self.calls.setdefault(i, {}), call)

    @staticmethod
    def _add_call(calls: dict[int, dict[str, str]], call: dict[str, Any]) -> None:
        entry = calls.setdefault(call.get("index", len(calls)), {"id": "", "name": ""})
        if call.get("id"):
            entry["id"] = call["id"]
        function = call.get("function")
        if isinstance(function, dict) and function.get("name"):
            entry["name"] += function["name"]

    def replies(self) -> list[Any]:
        indices = sorted(set(self.content) | set(self.calls))
        return [{"role": "assistant", "content": "".join(self.content.get(i, [])),
                 "tool_calls": [{"id": c["id"], "function": {"name": c["name"]}}
                                for _, c in sorted(self.calls.get(i, {}).items())]} for i in indices]


class ChatCompletions(OpenAIFormat):
    path = "/v1/chat/completions"

    def infer(self, index: ConversationIndex, owner: str | None, body: dict[str, Any]) -> Inference:
        return index.infer_chat(owner, body.get("messages"))

    def prompt_tokens(self, body: dict[str, Any], chars_per_token: float) -> int:
        """Characters of all message texts / chars_per_token, plus 4 per message for the template."""
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 0
        chars = sum(_text_len(m.get("content")) for m in messages if isinstance(m, dict))
        return int(chars / chars_per_token) + 4 * len(messages)

    def replies(self, data: object) -> list[Any]:
        return [c["message"] for c in choices(data) if isinstance(c.get("message"), dict)]

    def reply_builder(self) -> ChatReplies:
        return ChatReplies()


CHAT = ChatCompletions()
