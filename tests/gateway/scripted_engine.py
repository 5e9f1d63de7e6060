"""FAKE: a scripted stand-in engine for the real agent CLIs (Claude Code, Codex), whose system prompts
exceed the default model's 8k context. It answers in the Messages and Responses APIs' shapes
(fake_apis.py) with a fixed multi-turn tool loop, so the CLIs' real request sequences, subagent
included, go through the gateway:
- Claude Code (a call with tools): main thread: first the `Agent` tool (a blocking subagent), after its
  result `Bash` (`echo autellix`), after that result a final text; a subagent (its calls carry
  `x-claude-code-agent-id`) answers in text at once.
- Codex: `exec_command` (`echo autellix`), then after its output a final text.
- Any other call (no tools: titles, probes) gets a short text.
Every request (path, headers, body) is recorded in `requests`."""

from __future__ import annotations

from typing import Any

import fake_apis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _last_tool(messages: list[Any]) -> str | None:
    """The name of the tool the previous assistant message used, when the last message returns it."""
    if len(messages) < 2 or not isinstance(messages[-1].get("content"), list):
        return None
    if not any(b.get("type") == "tool_result" for b in messages[-1]["content"] if isinstance(b, dict)):
        return None
    content = messages[-2].get("content")
    uses = [b.get("name") for b in content if isinstance(b, dict) and b.get("type") == "tool_use"] \
        if isinstance(content, list) else []
    return uses[-1] if uses else None


class ScriptedEngine:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            Route("/health", lambda r: Response(status_code=200)),
            Route("/metrics", lambda r: Response("", media_type="text/plain")),
            Route("/v1/models", lambda r: JSONResponse({"object": "list", "data": [{"id": "scripted"}]})),
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
        ])

    async def _record(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        return body

    async def count_tokens(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"input_tokens": 100})

    async def messages(self, request: Request) -> Response:
        body = await self._record(request)
        tools = {t.get("name") for t in body.get("tools") or ()}
        if not tools or request.headers.get("x-claude-code-agent-id"):
            return fake_apis.messages_answer(body, "scripted", "Subagent finished: nothing to report.")
        last = _last_tool(body.get("messages") or [])
        if last is None and "Agent" in tools:
            return fake_apis.messages_answer(body, "scripted", "", [("Agent", {
                "description": "Check the folder", "prompt": "Reply with one word.",
                "subagent_type": "general-purpose", "run_in_background": False})])
        if last in (None, "Agent"):
            return fake_apis.messages_answer(body, "scripted", "", [("Bash", {
                "command": "echo autellix", "description": "Print a word"})])
        return fake_apis.messages_answer(body, "scripted", "All done.")

    async def responses(self, request: Request) -> Response:
        body = await self._record(request)
        items = body.get("input") if isinstance(body.get("input"), list) else []
        if not body.get("tools") or (items and items[-1].get("type") == "function_call_output"):
            return fake_apis.responses_answer(body, "scripted", "All done.")
        return fake_apis.responses_answer(body, "scripted", "", [("exec_command", {"cmd": "echo autellix"})])
