"""The replies of an answer, as a client will send them back: what the conversation index remembers
(autellix.gateway.conversations). Complete answers are read from their body; streamed ones are
assembled from their SSE chunks, tool-call deltas included."""

from __future__ import annotations

from typing import Any


class ReplyBuilder:
    """Assembles the replies of a streamed call from its chunks (chat deltas or text pieces)."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.content: dict[int, list[str]] = {}
        self.calls: dict[int, dict[int, dict[str, str]]] = {}

    def add(self, chunk: object) -> None:
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            i = choice.get("index", 0)
            delta = choice.get("delta") if self.chat else choice
            if not isinstance(delta, dict):
                continue
            piece = delta.get("content") if self.chat else delta.get("text")
            if isinstance(piece, str):
                self.content.setdefault(i, []).append(piece)
            for call in delta.get("tool_calls") or () if self.chat else ():
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
        if not self.chat:
            return ["".join(self.content.get(i, [])) for i in indices]
        return [{"role": "assistant", "content": "".join(self.content.get(i, [])),
                 "tool_calls": [{"id": c["id"], "function": {"name": c["name"]}}
                                for _, c in sorted(self.calls.get(i, {}).items())]} for i in indices]


def replies_from_body(body: object, chat: bool) -> list[Any]:
    """The replies of a complete (non-streamed) answer."""
    choices = body.get("choices") if isinstance(body, dict) else None
    out: list[Any] = []
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict):
            reply = choice.get("message") if chat else choice.get("text")
            if isinstance(reply, dict if chat else str):
                out.append(reply)
    return out
