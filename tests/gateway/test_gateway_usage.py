"""Service accounting from usage, and the balancer's prompt-size estimate."""

from __future__ import annotations

from autellix.bench.api_shapes import request_body
from autellix.gateway.api import CHAT, COMPLETIONS, MESSAGES, Usage
from autellix.gateway.api.base import text_chars
from autellix.gateway.api.openai import parse_usage
from autellix.gateway.api.responses import Responses
from autellix.gateway.response_store import ResponseStore
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


def test_messages_and_responses_estimates_count_every_text_once() -> None:
    """The flat loop (history_chars) counts what the generic walk (text_chars) counts, on each API's own
    shapes: text blocks and parts, tool results (string or blocks), function calls and their outputs."""
    call = {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": '{"path": "src"}'}}
    chat = [{"role": "system", "content": "s" * 30}, {"role": "user", "content": "u" * 50},
            {"role": "assistant", "content": "a" * 20, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "t" * 70}, {"role": "user", "content": "v" * 9}]
    messages = request_body("messages", chat)
    messages["messages"][2]["content"][0]["content"] = [{"type": "text", "text": "t" * 70}]  # result blocks
    expected = text_chars(messages["system"]) + text_chars(messages["messages"])
    assert MESSAGES.prompt_tokens(messages, 4.0) == int(expected / 4) + 4 * len(messages["messages"])
    responses = request_body("responses", chat)
    keys = ("text", "content", "output", "arguments")
    expected = len(responses["instructions"]) + text_chars(responses["input"], keys)
    responder = Responses(ResponseStore(1 << 20, 60))
    assert responder.prompt_tokens(responses, 4.0) == int(expected / 4) + 4 * len(responses["input"])
    assert responder.prompt_tokens({"input": "x" * 40}, 4.0) == 10 + 4
