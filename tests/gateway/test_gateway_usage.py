"""Service accounting from usage, and the balancer's prompt-size estimate."""

from __future__ import annotations

from autellix.gateway.api import CHAT, COMPLETIONS, Usage
from autellix.gateway.api.openai import parse_usage
from autellix.policy.config import PolicyConfig


def usage_from_body(raw: bytes) -> Usage | None:
    return CHAT.read_answer(raw, collect_replies=False).usage


def weight(prefill_weight: float) -> PolicyConfig:
    return PolicyConfig(prefill_weight=prefill_weight)


def test_service_counts_decode_plus_weighted_uncached_prefill() -> None:
    usage = parse_usage({"prompt_tokens": 100, "completion_tokens": 20,
                         "prompt_tokens_details": {"cached_tokens": 60}})
    assert usage == Usage(100, 20, 60)
    assert usage.service(weight(0.25)) == 20 + 0.25 * 40


def test_cached_tokens_absent_or_garbled_count_as_computed() -> None:
    assert parse_usage({"prompt_tokens": 8, "completion_tokens": 2}).service(weight(0.5)) == 6
    garbled = parse_usage({"prompt_tokens": "8", "completion_tokens": -3, "prompt_tokens_details": None})
    assert garbled == Usage(0, 0, 0)
    assert parse_usage(None) is None and parse_usage([1]) is None


def test_usage_from_body() -> None:
    assert usage_from_body(b'{"usage": {"prompt_tokens": 4, "completion_tokens": 1}}') == Usage(4, 1)
    assert usage_from_body(b"not json") is None
    assert usage_from_body(b"[1, 2]") is None


def test_prompt_estimate() -> None:
    chat = {"messages": [{"role": "user", "content": "x" * 400},
                         {"role": "user", "content": [{"type": "text", "text": "y" * 40}]}]}
    assert CHAT.prompt_tokens(chat, 4.0) == 110 + 8
    assert COMPLETIONS.prompt_tokens({"prompt": "z" * 80}, 4.0) == 20
    assert COMPLETIONS.prompt_tokens({"prompt": [1, 2, 3]}, 4.0) == 3
    assert COMPLETIONS.prompt_tokens({"prompt": ["a" * 8, "b" * 40]}, 4.0) == 10
    assert CHAT.prompt_tokens({}, 4.0) == 0 == COMPLETIONS.prompt_tokens({}, 4.0)
