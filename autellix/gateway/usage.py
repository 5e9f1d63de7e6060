"""Turning requests and responses into service (decode-token equivalents, DESIGN.md §2).

service = completion_tokens + prefill_weight x (prompt_tokens - cached prompt tokens)
Cached tokens come from `usage.prompt_tokens_details.cached_tokens` when the engine reports them (vLLM
does with --enable-prompt-tokens-details); otherwise every prompt token counts as computed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def service(self, prefill_weight: float) -> float:
        computed = max(0, self.prompt_tokens - self.cached_tokens)
        return self.completion_tokens + prefill_weight * computed


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(usage: object) -> Usage | None:
    """An OpenAI `usage` object -> Usage; None when absent or not an object."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), cached)


def usage_from_body(raw: bytes) -> Usage | None:
    """Usage of a non-streaming response body, or None if it is not JSON with usage."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return parse_usage(data.get("usage")) if isinstance(data, dict) else None


def _text_len(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict)
                   and isinstance(p.get("text"), str))
    return 0


def estimate_prompt_tokens(body: dict[str, Any], chars_per_token: float) -> int:
    """Rough prompt size for the balancer, before the engine has tokenized anything.

    Chat: characters of all message texts / chars_per_token, plus 4 per message for the template.
    Completions: a string prompt likewise; token-id prompts are counted exactly.
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_len(m.get("content")) for m in messages if isinstance(m, dict))
        return int(chars / chars_per_token) + 4 * len(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return int(len(prompt) / chars_per_token)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) for t in prompt):
            return len(prompt)
        return max(estimate_prompt_tokens({"prompt": p}, chars_per_token) for p in prompt)
    return 0
