"""One streamed completion call against an OpenAI-compatible endpoint, timed token by token.

Why `/v1/completions` with a text prompt: the replay controls the prompt's exact token count (see
prompts.py); a chat template would add tokens the client cannot count for every model. Why streaming: the
time of the first chunk is the TTFT, the gaps between chunks are the decode step times (calibrate.py).
Output length is fixed with `max_tokens` + `ignore_eos` (a vLLM extension; other servers may stop early,
which the recorded `completion_tokens` shows). Program identity travels both as `X-Program-ID` /
`X-Thread-ID` headers (read by the Autellix gateway) and as `vllm_xargs` in the body (read by an engine
running the Autellix scheduler directly); a stock vLLM ignores both. A batch program's calls also name
their class, as the header `x-autellix-class: batch` and as `autellix_class` in `vllm_xargs`
(docs/gateway.md, "Classes"); an interactive program's name none (interactive is the default).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from autellix.bench.targets import describe_error
from autellix.context import CLASS_HEADER, class_name, to_xargs


@dataclass
class StreamedCompletion:
    """One streamed completion call, timed. Times are `time.perf_counter()` values. Invariant: `error` is
    None exactly when the stream ended normally; `text`/`completion_tokens` then hold the whole output."""

    sent: float
    first_token: float | None = None
    finished: float | None = None
    text: str = ""
    completion_tokens: int = 0
    engine_prompt_tokens: int | None = None
    cached_tokens: int | None = None
    """Prompt tokens the engine's prefix cache served (`usage.prompt_tokens_details.cached_tokens`; vLLM
    reports it with `--enable-prompt-tokens-details`)."""
    chunk_times: list[float] = field(default_factory=list)
    error: str | None = None


def completion_body(model: str, prompt: str, max_tokens: int, program: str | None, thread: str,
                    cache_salt: str | None = None, batch: bool = False) -> dict[str, Any]:
    """The request body; `temperature` 0 so reruns generate the same text (and the same histories).
    `batch` reaches `vllm_xargs` only with a program (the plugin reads a class only with one)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if program is not None:
        body["vllm_xargs"] = to_xargs(program, thread, batch=True if batch else None)
    if cache_salt:
        body["cache_salt"] = cache_salt
    return body


def call_headers(program: str | None, thread: str, batch: bool = False) -> dict[str, str]:
    """A call's headers: its identity when sent (`program` not None) and, for a batch program, its class
    (sent with or without identity: the class says nothing about which program it is)."""
    headers = {"X-Program-ID": program, "X-Thread-ID": thread} if program is not None else {}
    if batch:
        headers[CLASS_HEADER] = class_name(True)
    return headers


async def stream_completion(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                            headers: dict[str, str], timeout: float,
                            keep_chunk_times: bool = False) -> StreamedCompletion:
    """POST `body` (which must ask for a stream) and read the SSE stream; never raises for HTTP trouble."""
    out = StreamedCompletion(sent=time.perf_counter())
    parts: list[str] = []
    chunks = 0
    try:
        async with client.stream("POST", url, json=body, headers=headers, timeout=timeout) as r:
            if r.status_code >= 400:
                detail = (await r.aread()).decode(errors="replace").strip().replace("\n", " ")
                out.error = f"HTTP {r.status_code}: {detail[:300]}"
                return out
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(payload)
                if "error" in chunk:  # an error reported inside a 200 stream (vLLM does this mid-stream)
                    out.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                    return out
                usage = chunk.get("usage")
                if usage:
                    out.completion_tokens = int(usage.get("completion_tokens") or 0)
                    out.engine_prompt_tokens = usage.get("prompt_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    out.cached_tokens = details.get("cached_tokens")
                for choice in chunk.get("choices") or ():
                    if out.first_token is None:
                        out.first_token = now
                    chunks += 1
                    parts.append(choice.get("text") or "")
                    if keep_chunk_times:
                        out.chunk_times.append(now)
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: a chunk that is not JSON
        out.error = describe_error(exc)
        return out
    out.finished = time.perf_counter()
    out.text = "".join(parts)
    if not out.completion_tokens:  # server sent no usage: one chunk per token is vLLM's default
        out.completion_tokens = chunks
    if out.first_token is None:
        out.error = "stream ended without any output"
    return out
