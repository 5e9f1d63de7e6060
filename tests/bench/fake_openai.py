"""FakeOpenAIUpstream: a FAKE OpenAI completions server used ONLY by the bench tests (never a baseline).

It stands in for a vLLM engine so the replay can be checked quickly and exactly:
- counts each prompt's tokens with a given tokenizer (the one the replay sizes prompts with) and reports
  them as usage.prompt_tokens, as vLLM does;
- streams exactly `max_tokens` chunks (one per token, like vLLM with ignore_eos) after a prefill delay of
  `prefill_base + prefill_per_token * prompt_tokens`, then one chunk every
  `decode_step * (1 + batch_slowdown * (active_streams - 1))` seconds (a crude batching engine, enough for
  calibrate's arithmetic);
- reports `prompt_tokens_details.cached_tokens` as an unbounded prefix cache would (the longest earlier
  prompt this one extends);
- records every request (body, headers, start and end times) in `requests`;
- `fail_status`: answer every generation request with that HTTP status instead (a broken target).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Seen:
    """One request as the fake saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    prompt_tokens: int
    start: float
    end: float | None = None


@dataclass
class FakeOpenAIUpstream:
    tokenizer: Any
    prefill_base: float = 0.0
    prefill_per_token: float = 0.0
    decode_step: float = 0.0
    batch_slowdown: float = 0.0
    fail_status: int | None = None
    max_model_len: int = 8192
    model_root: str | None = None
    requests: list[Seen] = field(default_factory=list)
    active: int = 0

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/models", self.models),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/metrics", self.metrics),
        ])

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": "fake-model", "object": "model", "root": self.model_root,
            "max_model_len": self.max_model_len}]})

    async def metrics(self, request: Request) -> Response:
        return Response('vllm:cache_config_info{block_size="128",num_gpu_blocks="125"} 1.0\n',
                        media_type="text/plain")

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        if self.fail_status is not None:
            return JSONResponse({"error": {"message": "fake upstream failing on purpose"}},
                                status_code=self.fail_status)
        n_prompt = len(self.tokenizer.encode(body["prompt"]).ids)
        seen = Seen(body, dict(request.headers), n_prompt, time.perf_counter())
        self.requests.append(seen)
        return StreamingResponse(self._stream(seen, int(body["max_tokens"])), media_type="text/event-stream")

    def _cached(self, seen: Seen) -> int:
        """An unbounded prefix cache: the tokens of the longest earlier prompt this one extends."""
        prompt = seen.body["prompt"]
        best = max((s.prompt_tokens for s in self.requests
                    if s is not seen and s.start < seen.start and prompt.startswith(s.body["prompt"])),
                   default=0)
        return min(best, seen.prompt_tokens - 1)

    async def _stream(self, seen: Seen, n: int) -> AsyncIterator[str]:
        self.active += 1
        try:
            await asyncio.sleep(self.prefill_base + self.prefill_per_token * seen.prompt_tokens)
            for i in range(n):
                if i:
                    await asyncio.sleep(self.decode_step * (1 + self.batch_slowdown * (self.active - 1)))
                chunk = {"id": "cmpl-fake", "choices": [{"index": 0, "text": " w"}]}  # one token, as vLLM
                yield f"data: {json.dumps(chunk)}\n\n"
            usage = {"prompt_tokens": seen.prompt_tokens, "completion_tokens": n,
                     "total_tokens": seen.prompt_tokens + n,
                     "prompt_tokens_details": {"cached_tokens": self._cached(seen)}}
            yield f"data: {json.dumps({'id': 'cmpl-fake', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.active -= 1
            seen.end = time.perf_counter()


ServeFake = Callable[..., tuple[FakeOpenAIUpstream, str]]
"""Type of the `serve_fake` fixture: serve_fake(**settings) -> (fake, base_url)."""
