"""FAKE answers of the Anthropic Messages API and the OpenAI Responses API, for FakeEngine (fake_engine.py)
and the scripted engine the real CLIs talk to (scripted_engine.py): the shapes vLLM 0.32 answers in, complete
or streamed (`event:` / `data:` SSE events), with usage. An answer is `text` and optional tool calls; by
default `max_tokens` (or `max_output_tokens`, default 5) "tok" words. Bodies that vLLM would reject
with a validation error (no `model`, `max_tokens` not an integer) get its 400 in OpenAI's shape."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _invalid(message: str) -> Response:
    error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
    return JSONResponse({"error": error}, status_code=400)


def messages_answer(body: dict[str, Any], engine: str, text: str | None = None,
                    tools: list[tuple[str, dict[str, Any]]] = ()) -> Response:
    """A Messages-API answer: `text`, then a tool_use block per (name, input) in `tools`."""
    n = body.get("max_tokens")
    if not isinstance(body.get("model"), str) or not isinstance(n, int) or isinstance(n, bool):
        return _invalid("1 validation error: model and max_tokens are required")
    text = "tok " * n if text is None else text
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks += [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:12]}", "name": name, "input": args}
               for name, args in tools]
    prompt = len(json.dumps(body.get("messages"))) // 4
    out = max(1, len(text.split()) + 8 * len(tools))
    stop = "tool_use" if tools else "end_turn"
    message = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "content": blocks,
               "model": body["model"], "stop_reason": stop, "stop_sequence": None,
               "usage": {"input_tokens": prompt, "output_tokens": out}}
    if not body.get("stream"):
        return JSONResponse(message, headers={"x-fake-engine": engine})

    def events() -> Iterator[str]:
        start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": prompt,
                                                                           "output_tokens": 0}}
        yield _sse("message_start", {"type": "message_start", "message": start})
        for i, block in enumerate(blocks):
            opening = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
            yield _sse("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": opening})
            delta = ({"type": "text_delta", "text": block["text"]} if block["type"] == "text" else
                     {"type": "input_json_delta", "partial_json": json.dumps(block["input"])})
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": i})
        yield _sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"input_tokens": prompt, "output_tokens": out}})
        yield _sse("message_stop", {"type": "message_stop"})

    return StreamingResponse(events(), media_type="text/event-stream", headers={"x-fake-engine": engine})


def responses_answer(body: dict[str, Any], engine: str, text: str | None = None,
                     tools: list[tuple[str, dict[str, Any]]] = ()) -> Response:
    """A Responses-API answer: a message item with `text`, then a function_call item per tool."""
    if body.get("previous_response_id"):
        message = f"Response with id '{body['previous_response_id']}' not found."
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": 404}
        return JSONResponse({"error": error}, status_code=404)
    if not isinstance(body.get("input"), (str, list)):
        return _invalid("1 validation error: input")
    n = body.get("max_output_tokens") or 5
    text = "tok " * n if text is None else text
    rid = f"resp_{uuid.uuid4().hex}"
    output: list[dict[str, Any]] = []
    if text:
        output.append({"type": "message", "id": f"msg_{uuid.uuid4().hex[:12]}", "status": "completed",
                       "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    output += [{"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}",
                "call_id": f"call_{uuid.uuid4().hex[:12]}", "name": name, "arguments": json.dumps(args),
                "status": "completed"} for name, args in tools]
    prompt = len(json.dumps(body.get("input"))) // 4
    out = max(1, len(text.split()) + 8 * len(tools))
    response = {"id": rid, "object": "response", "created_at": 0, "status": "completed",
                "model": body.get("model"), "output": output, "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": [],
                "store": body.get("store", True), "previous_response_id": None,
                "usage": {"input_tokens": prompt, "output_tokens": out, "total_tokens": prompt + out,
                          "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 0}}}
    if not body.get("stream"):
        return JSONResponse(response, headers={"x-fake-engine": engine})

    def events() -> Iterator[str]:
        seq = iter(range(1 << 30))
        pending = {**response, "status": "in_progress", "output": [], "usage": None}
        yield _sse("response.created", {"type": "response.created", "sequence_number": next(seq),
                                        "response": pending})
        for i, item in enumerate(output):
            yield _sse("response.output_item.added", {"type": "response.output_item.added", "output_index": i,
                                                      "sequence_number": next(seq), "item": item})
            if item["type"] == "message":
                yield _sse("response.output_text.delta", {
                    "type": "response.output_text.delta", "sequence_number": next(seq), "item_id": item["id"],
                    "output_index": i, "content_index": 0, "delta": text, "logprobs": []})
            else:
                yield _sse("response.function_call_arguments.delta", {
                    "type": "response.function_call_arguments.delta", "sequence_number": next(seq),
                    "item_id": item["id"], "output_index": i, "delta": item["arguments"]})
            yield _sse("response.output_item.done", {"type": "response.output_item.done", "output_index": i,
                                                     "sequence_number": next(seq), "item": item})
        yield _sse("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                          "response": response})

    return StreamingResponse(events(), media_type="text/event-stream", headers={"x-fake-engine": engine})
