"""Ground truth for program inference: real agent sessions replayed, interleaved, through the gateway.

Data: shared/data/lmcache_agent_trace (miniswe: mini-swe-agent; taubench: an airline agent talking to an
LLM-simulated user). One file is one session; one line is one call with its full prompt text, its output
text and the session id. The trace flattens chat histories into text (user-side messages only), so the
chat calls are rebuilt from it, the way the agent's client built them:
- a call's *parent* is the latest earlier call of its session whose prompt its own prompt extends (none:
  the call starts a conversation: `[SYSTEM, user(prompt)]`);
- its messages are the parent's messages, the parent's reply, then what the trace adds after the
  parent's prompt: a user message with that text (an empty output in the trace is a tool call, so the
  reply is an assistant tool call and the added messages start with its tool result);
- the engine answers each call with the output the trace recorded for it (TraceEngine).
The same calls go out over any API the gateway serves (`api`: chat completions, Anthropic Messages,
OpenAI Responses), each in that API's request shape and answered in its answer shape
(autellix.bench.api_shapes); no call names its program.
Every conversation starts with the same SYSTEM prompt, on purpose: a shared prefix must not merge.
A tau-bench session holds two conversations (the agent's and the simulated user's), each quoting the
other's replies; the session is one program (one task run), so the check counts calls against sessions.

Figures: the share of calls whose program is their session's program (the program holding most of the
session's calls, and holding no other session's calls), wrongly merged programs (programs holding calls
of more than one session) and split sessions (sessions over more than one program).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from autellix.bench.api_shapes import PATHS, answer, answer_events, request_body
from autellix.workloads.data import data_dir

SYSTEM = {"role": "system", "content": "You are a helpful assistant that can use tools."}
TOOL_RESULT = "(tool result not recorded in the trace)"
SOURCES = ("miniswe", "taubench")


@dataclass(slots=True)
class TraceCall:
    key: str
    """session/line: how TraceEngine finds the recorded output."""
    session: str
    messages: list[dict[str, Any]]
    reply: dict[str, Any]
    """The assistant message the engine returns (and the client keeps)."""
    stream: bool = False


@dataclass(slots=True)
class Session:
    session_id: str
    calls: list[TraceCall] = field(default_factory=list)


def _reply(output: str, key: str) -> dict[str, Any]:
    if output.strip():
        return {"role": "assistant", "content": output}
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_" + key.replace("/", "_"), "type": "function",
         "function": {"name": "tool", "arguments": "{}"}}]}


def rebuild(rows: list[dict[str, Any]], session_id: str) -> Session:
    """Chat calls of one trace session (module doc); rows in any order."""
    rows = sorted(rows, key=lambda r: r["timestamp"])
    session = Session(session_id)
    for k, row in enumerate(rows):
        key = f"{session_id}/{k}"
        prompt: str = row["input"]
        parents = [j for j in range(k) if prompt.startswith(rows[j]["input"])]
        if not parents:
            messages = [SYSTEM, {"role": "user", "content": prompt}]
        else:
            j = max(parents, key=lambda j: (len(rows[j]["input"]), j))
            parent = session.calls[j]
            added = prompt[len(rows[j]["input"]):].strip()
            messages = [*parent.messages, parent.reply]
            if parent.reply.get("tool_calls"):
                messages.append({"role": "tool", "tool_call_id": parent.reply["tool_calls"][0]["id"],
                                 "content": TOOL_RESULT})
            if added:
                messages.append({"role": "user", "content": added})
        session.calls.append(TraceCall(key, session_id, messages, _reply(row["output"], key),
                                       stream=k % 2 == 1))
    return session


def load_sessions(sources: tuple[str, ...] = SOURCES) -> list[Session]:
    sessions = []
    for source in sources:
        for path in sorted((data_dir() / "lmcache_agent_trace" / source).glob("*.jsonl")):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if rows:
                sessions.append(rebuild(rows, f"{source}:{path.stem}"))
    return sessions


class TraceEngine:
    """A stand-in engine (FAKE: it isolates attribution from generation) answering each call with the
    output the trace recorded, found by the `x-trace-call` header the replayer sends, in the shape of
    the API whose route the gateway forwarded the call to (the engine's same path)."""

    def __init__(self, sessions: list[Session]) -> None:
        self.replies = {c.key: c.reply for s in sessions for c in s.calls}
        routes = [Route(path, self.answer, methods=["POST"]) for path in PATHS.values()]
        self.app = Starlette(routes=[Route("/health", self.health), *routes])

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def answer(self, request: Request) -> Response:
        body = await request.json()
        api = next(api for api, path in PATHS.items() if path == request.url.path)
        reply = self.replies[request.headers["x-trace-call"]]
        if not body.get("stream"):
            return JSONResponse(answer(api, reply))
        return StreamingResponse(answer_events(api, reply), media_type="text/event-stream")


async def replay(gateway_url: str, sessions: list[Session], seed: int = 0, api: str = "chat"
                 ) -> dict[str, str]:
    """Every session at once, its calls in order (random small gaps interleave them), each in `api`'s
    request shape (autellix.bench.api_shapes); returns the program the gateway named for each call."""
    rng = random.Random(seed)
    named: dict[str, str] = {}

    async def run(session: Session, http: aiohttp.ClientSession) -> None:
        for call in session.calls:
            await asyncio.sleep(rng.uniform(0, 0.02))
            body = request_body(api, call.messages, call.stream)
            async with http.post(gateway_url + PATHS[api], json=body,
                                 headers={"x-trace-call": call.key}) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{call.key}: gateway answered {resp.status}")
                # an anonymous call (inference off) is a one-call program of its own
                named[call.key] = resp.headers.get("x-autellix-program", "anonymous:" + call.key)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(run(s, http) for s in sessions))
    return named


@dataclass(frozen=True, slots=True)
class Attribution:
    calls: int
    right: int
    merged_programs: int
    split_sessions: int
    sessions: int
    programs: int

    @property
    def share(self) -> float:
        return self.right / self.calls if self.calls else 0.0


def score(sessions: list[Session], named: dict[str, str]) -> Attribution:
    """Calls attributed to their session's program; programs merging sessions; sessions split."""
    by_session = {s.session_id: Counter(named[c.key] for c in s.calls) for s in sessions}
    members: dict[str, set[str]] = defaultdict(set)
    for sid, programs in by_session.items():
        for program in programs:
            members[program].add(sid)
    right = 0
    for sid, programs in by_session.items():
        main, count = programs.most_common(1)[0]
        right += count if members[main] == {sid} else 0
    return Attribution(calls=len(named), right=right,
                       merged_programs=sum(len(s) > 1 for s in members.values()),
                       split_sessions=sum(len(p) > 1 for p in by_session.values()),
                       sessions=len(sessions), programs=len(members))


def run_check(sessions: list[Session], seed: int = 0, infer: bool = True, api: str = "chat") -> Attribution:
    """Replay `sessions` as `api` calls through a real gateway (uvicorn, loopback) in front of a
    TraceEngine."""
    import socket
    import threading
    import time

    import uvicorn

    from autellix.gateway import GatewayConfig, create_app

    def serve(app: Any) -> tuple[uvicorn.Server, str, threading.Thread]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("replay server did not start")
            time.sleep(0.01)
        return server, f"http://127.0.0.1:{port}", thread

    engine = serve(TraceEngine(sessions).app)
    gateway = serve(create_app(GatewayConfig(engines=(engine[1],), infer_programs=infer)))
    try:
        return score(sessions, asyncio.run(replay(gateway[1], sessions, seed, api)))
    finally:
        for server, _, thread in (gateway, engine):  # the gateway first: it never probes a stopped engine
            server.should_exit = True
            thread.join(timeout=10)
