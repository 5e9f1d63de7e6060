"""One conversation in the request shape of each API the gateway serves, and one assistant reply in each
API's answer shape (complete or streamed): what a client of that API sends and what an engine answers.
Used by the identity check (autellix.bench.identity_check: the agent traces replayed over each API) and
by scripts/bench_gateway.py (its histories and its fake upstream's answers).

A conversation is written once, as chat messages (system, user, assistant with optional `tool_calls`,
tool); each API's shape is derived from it the way that API's clients build it:
- chat (`/v1/chat/completions`): the messages as they are;
- messages (`/v1/messages`, Anthropic; Claude Code): the system prompt top-level, as text blocks; every
  message's content as blocks; an assistant's tool calls as `tool_use` blocks; a tool result as a
  `tool_result` block of a user message; consecutive user-side messages (tool results, then the user's
  text) are one user message, since the API alternates roles;
- responses (`/v1/responses`, OpenAI; Codex): the system prompt as `instructions`; messages as `message`
  items, tool calls as `function_call` items, tool results as `function_call_output` items; `store:
  false` and the whole input every turn (no `previous_response_id`), as Codex sends it.
Invariants: an answer's reply is exactly the blocks or items the next request sends back for it, so a
client that keeps the answer and one that rebuilds it from chat messages send the same history; nothing
here names a program (no header, no session or cache-key field): a gateway must infer it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

APIS = ("chat", "messages", "responses")
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}
PIECE = 40
"""Characters per streamed text delta."""

Message = dict[str, Any]


def _tool_calls(message: Message) -> list[tuple[str, str, str]]:
    """(id, function name, arguments) of an assistant message's tool calls."""
    return [(c["id"], c["function"]["name"], c["function"].get("arguments") or "{}")
            for c in message.get("tool_calls") or ()]


def assistant_blocks(message: Message) -> list[dict[str, Any]]:
    """An assistant message as Messages-API content blocks: its text, then a tool_use per tool call."""
    text = message["content"]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks += [{"type": "tool_use", "id": cid, "name": name, "input": json.loads(args)}
               for cid, name, args in _tool_calls(message)]
    return blocks


def assistant_items(message: Message) -> list[dict[str, Any]]:
    """An assistant message as Responses-API items: a message item, then a function_call per tool call."""
    items: list[dict[str, Any]] = []
    if message["content"]:
        items.append({"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": message["content"], "annotations": []}]})
    items += [{"type": "function_call", "call_id": cid, "name": name, "arguments": args}
              for cid, name, args in _tool_calls(message)]
    return items


def _anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant":
            out.append({"role": "assistant", "content": assistant_blocks(m)})
            continue
        block = ({"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"]}
                 if m["role"] == "tool" else {"type": "text", "text": m["content"]})
        if out and out[-1]["role"] == "user":  # roles alternate: user-side messages in a row are one
            out[-1]["content"].append(block)
        else:
            out.append({"role": "user", "content": [block]})
    return out


def _response_items(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant":
            out += assistant_items(m)
        elif m["role"] == "tool":
            out.append({"type": "function_call_output", "call_id": m["tool_call_id"], "output": m["content"]})
        else:
            out.append({"type": "message", "role": m["role"],
                        "content": [{"type": "input_text", "text": m["content"]}]})
    return out


def conversation(api: str, messages: list[Message]) -> list[dict[str, Any]]:
    """The non-system messages as `api`'s message list (`messages`) or input items (`input`)."""
    if api == "chat":
        return list(messages)
    return _anthropic_messages(messages) if api == "messages" else _response_items(messages)


def request_body(api: str, messages: list[Message], stream: bool = False, model: str = "trace",
                 max_tokens: int = 64) -> dict[str, Any]:
    """A whole request of `api` for a chat conversation (module doc); the message list or input is the
    body's last key."""
    if api == "chat":
        return {"model": model, "max_tokens": max_tokens, "stream": stream, "messages": list(messages)}
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    if api == "messages":
        head: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": stream}
        if system:
            head["system"] = [{"type": "text", "text": system}]
        return {**head, "messages": conversation(api, rest)}
    head = {"model": model, "max_output_tokens": max_tokens, "stream": stream, "store": False}
    if system:
        head["instructions"] = system
    return {**head, "input": conversation(api, rest)}


# -- answers ---------------------------------------------------------------------------------------------

def answer(api: str, reply: Message, prompt_tokens: int = 1, completion_tokens: int = 1,
           answer_id: str = "trace") -> dict[str, Any]:
    """A complete answer of `api` whose reply is the assistant message `reply`."""
    if api == "chat":
        return {"id": answer_id, "object": "chat.completion", "model": "trace",
                "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}
    if api == "messages":
        return {"id": "msg_" + answer_id, "type": "message", "role": "assistant", "model": "trace",
                "content": assistant_blocks(reply), "stop_sequence": None,
                "stop_reason": "tool_use" if reply.get("tool_calls") else "end_turn",
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}}
    return {"id": "resp_" + answer_id, "object": "response", "created_at": 0, "status": "completed",
            "model": "trace", "output": assistant_items(reply), "store": False, "previous_response_id": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "input_tokens_details": {"cached_tokens": 0}}}


def _event(kind: str | None, data: dict[str, Any]) -> str:
    return (f"event: {kind}\n" if kind else "") + f"data: {json.dumps(data)}\n\n"


def _pieces(text: str) -> list[str]:
    return [text[i:i + PIECE] for i in range(0, len(text), PIECE)]


def answer_events(api: str, reply: Message) -> Iterator[str]:
    """The same answer streamed, as that API's SSE events (text in PIECE-character deltas)."""
    whole = answer(api, reply)
    if api == "chat":
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in _pieces(reply["content"])]
        deltas += [{"tool_calls": [{"index": 0, "id": c["id"], "function": c["function"]}]}
                   for c in reply.get("tool_calls") or ()]
        for delta in deltas:
            yield _event(None, {"choices": [{"index": 0, "delta": delta}]})
        yield _event(None, {"choices": [], "usage": whole["usage"]})
        yield "data: [DONE]\n\n"
    elif api == "messages":
        yield from _messages_events(whole)
    else:
        yield from _responses_events(whole)


def _messages_events(message: dict[str, Any]) -> Iterator[str]:
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 0}}
    yield _event("message_start", {"type": "message_start", "message": start})
    for i, block in enumerate(message["content"]):
        text = block["type"] == "text"
        yield _event("content_block_start", {"type": "content_block_start", "index": i,
                                             "content_block": {**block, "text": ""} if text else
                                             {**block, "input": {}}})
        deltas = ([{"type": "text_delta", "text": p} for p in _pieces(block["text"])] if text else
                  [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}])
        for delta in deltas:
            yield _event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
        yield _event("content_block_stop", {"type": "content_block_stop", "index": i})
    yield _event("message_delta", {"type": "message_delta", "usage": message["usage"],
                                   "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}})
    yield _event("message_stop", {"type": "message_stop"})


def _responses_events(response: dict[str, Any]) -> Iterator[str]:
    seq = iter(range(1 << 30))
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    yield _event("response.created", {"type": "response.created", "sequence_number": next(seq),
                                      "response": pending})
    for i, item in enumerate(response["output"]):
        yield _event("response.output_item.added", {"type": "response.output_item.added", "item": item,
                                                    "output_index": i, "sequence_number": next(seq)})
        message = item["type"] == "message"
        kind = "response.output_text.delta" if message else "response.function_call_arguments.delta"
        for piece in _pieces(item["content"][0]["text"]) if message else [item["arguments"]]:
            yield _event(kind, {"type": kind, "output_index": i, "delta": piece,
                                "sequence_number": next(seq)})
        yield _event("response.output_item.done", {"type": "response.output_item.done", "item": item,
                                                   "output_index": i, "sequence_number": next(seq)})
    yield _event("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                        "response": response})
