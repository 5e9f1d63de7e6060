"""OpenAI text completions (POST /v1/completions): the conversation is the `prompt` string, a reply is
the completion text (streamed: its pieces joined)."""

from __future__ import annotations

from typing import Any

from autellix.gateway.api.openai import OpenAIFormat, choices
from autellix.gateway.conversations import ConversationIndex, Inference


class TextReplies:
    """Assembles the completion texts of a streamed text answer, one per choice index."""

    def __init__(self) -> None:
        self.content: dict[int, list[str]] = {}

    def add(self, chunk: object) -> None:
        for choice in choices(chunk):
            piece = choice.get("text")
            if isinstance(piece, str):
                self.content.setdefault(choice.get("index", 0), []).append(piece)

    def replies(self) -> list[Any]:
        return ["".join(self.content[i]) for i in sorted(self.content)]


def _prompt_tokens(prompt: object, chars_per_token: float) -> int:
    if isinstance(prompt, str):
        return int(len(prompt) / chars_per_token)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) for t in prompt):
            return len(prompt)  # token ids: exact
        return max(_prompt_tokens(p, chars_per_token) for p in prompt)  # a batch: its largest prompt
    return 0


class TextCompletions(OpenAIFormat):
    path = "/v1/completions"

    def infer(self, index: ConversationIndex, owner: str | None, body: dict[str, Any]) -> Inference | None:
        prompt = body.get("prompt")
        return index.infer_text(owner, prompt) if isinstance(prompt, str) else None  # not a batch, not ids

    def prompt_tokens(self, body: dict[str, Any], chars_per_token: float) -> int:
        """A string prompt: characters / chars_per_token; token ids: counted exactly."""
        return _prompt_tokens(body.get("prompt"), chars_per_token)

    def replies(self, data: object) -> list[Any]:
        return [c["text"] for c in choices(data) if isinstance(c.get("text"), str)]

    def reply_builder(self) -> TextReplies:
        return TextReplies()


COMPLETIONS = TextCompletions()
