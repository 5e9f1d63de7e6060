"""Forwarding calls to engines: program context in, usage out.

Life of a call: read the body (413 past `max_body_bytes`) and parse it (400 if malformed) -> identity
(autellix.gateway.identity; no id named: inferred from the conversation, autellix.gateway.conversations,
400 for an unreadable message list) -> `Sessions.begin_call` (404 for another owner's program) -> add
`vllm_xargs` and, for streams, `stream_options.include_usage` -> pick an engine (balancer) -> send ->
relay the answer -> charge usage to the process table (and, for an inferred program, remember the reply
so the program's next call is recognised).

Failure rules:
- The engine could not be connected to (request never sent): mark it unhealthy and try the next healthy
  engine; the call is safe to resend because the engine never saw it.
- The engine failed after the request was sent (reset, dropped connection): 502 naming the engine; the
  call is not retried (it may have run) and the engine is marked unhealthy until its next good probe.
- The engine's own error responses (4xx, 5xx) pass through unchanged.
- The client disconnected: the upstream request is cancelled (its connection closed).
Invariant: every call that `begin_call` opened is finished exactly once (`_Flight.finish`), and every
`load.active` increment has its decrement, whatever path the call takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from autellix.context import to_xargs
from autellix.gateway.auth import Owner
from autellix.gateway.bodies import json_or_none, parse_json_object, read_body
from autellix.gateway.conversations import ConversationIndex, Inference, MalformedMessages
from autellix.gateway.engines import Engine, EnginePool, NoHealthyEngine
from autellix.gateway.errors import GatewayError
from autellix.gateway.identity import Identity, resolve_identity
from autellix.gateway.metrics import GatewayMetrics
from autellix.gateway.replies import ReplyBuilder, replies_from_body
from autellix.gateway.sessions import Sessions
from autellix.gateway.streaming import RelayStream, StreamResult, wait_disconnect
from autellix.gateway.usage import Usage, estimate_prompt_tokens, usage_from_body
from autellix.programs import Call

_DROP_REQUEST = frozenset({
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
    "proxy-authorization", "proxy-connection", "authorization", "accept-encoding",
    "x-program-id", "x-thread-id", "x-session-id"})
_DROP_RESPONSE = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
                            b"date", b"server"})


class ClientGone(Exception):
    """The client disconnected before the engine answered."""


Sent = tuple[aiohttp.ClientResponse, bytes | None]
"""An engine's response and, unless it is a successful stream, its whole body."""


def upstream_headers(request: Request, json_body: bool = False) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop, identity and gateway-auth ones. `json_body`: the body was
    re-serialised here, so its content type is ours to state."""
    drop = _DROP_REQUEST | {"content-type"} if json_body else _DROP_REQUEST
    headers = [(k, v) for k, v in request.headers.items() if k not in drop]
    headers.append(("accept-encoding", "identity"))  # SSE is parsed here: no compression upstream
    if json_body:
        headers.append(("content-type", "application/json"))
    return headers


def client_headers(resp: aiohttp.ClientResponse, engine: Engine,
                   program: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in _DROP_RESPONSE]
    headers.append((b"x-autellix-engine", engine.name.encode()))
    if program is not None:
        headers.append((b"x-autellix-program", program.encode()))
    return headers


def program_xargs(call: Call) -> dict[str, str | float]:
    """Program context for the engine's Autellix scheduler (DESIGN.md §4): ids, and the service and
    wait snapshots at arrival. Anonymous calls send nothing: the engine plugin then runs them as
    one-call programs without keeping a table entry for each (their snapshots would be 0 anyway)."""
    if call.program.ephemeral:
        return {}
    return to_xargs(call.program_id, call.thread, call.start_service, call.start_wait)


def never_sent(exc: BaseException) -> bool:
    """The engine could not be reached at all, so the request is safe to send elsewhere."""
    return isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))


class _Flight:
    """One call in flight on one engine; `finish` charges the table and releases the engine once."""

    def __init__(self, proxy: Proxy, call: Call, endpoint: str, inference: Inference | None) -> None:
        self.proxy, self.call, self.endpoint = proxy, call, endpoint
        self.inference = inference
        self.replies: list[Any] = []
        """The answer's replies (only collected for inferred programs); none: the call failed."""
        self.engine: Engine | None = None
        self.t0 = time.perf_counter()
        self.done = False

    def finish(self, usage: Usage | None, exact_step: float | None = None) -> None:
        if self.done:
            return
        self.done = True
        engine, sessions = self.engine, self.proxy.sessions
        latency = time.perf_counter() - self.t0
        wait = 0.0
        if engine is not None:
            engine.load.active -= 1
            tokens = usage.completion_tokens if usage else 0
            if exact_step is not None:
                engine.observe_step(exact_step, exact=True)
            elif tokens:
                engine.observe_step(latency / tokens, exact=False)
            wait = engine.wait_steps(latency, tokens)
        sessions.finish_call(self.call, usage, wait)
        if self.inference is not None:
            index = self.proxy.conversations
            assert index is not None
            if self.replies:
                index.replied(self.inference, self.replies)
            else:
                index.failed(self.inference)
        if engine is not None:
            service = usage.service(sessions.policy.prefill_weight) if usage else 0.0
            self.proxy.metrics.call_done(engine.name, self.endpoint, latency, service)


def infer(index: ConversationIndex, owner: Owner, body: dict[str, Any], chat: bool) -> Inference | None:
    """The conversation's program; None when the call cannot be matched (a batch or token prompt)."""
    try:
        if chat:
            return index.infer_chat(owner, body.get("messages"))
        prompt = body.get("prompt")
        return index.infer_text(owner, prompt) if isinstance(prompt, str) else None
    except MalformedMessages as exc:
        raise GatewayError(400, f"malformed message list: {exc}") from None


class Proxy:
    def __init__(self, pool: EnginePool, sessions: Sessions, metrics: GatewayMetrics,
                 chars_per_token: float, conversations: ConversationIndex | None = None,
                 user_programs: bool = False, max_body_bytes: int = 32 << 20) -> None:
        self.pool = pool
        self.sessions = sessions
        self.metrics = metrics
        self.chars_per_token = chars_per_token
        self.conversations = conversations
        self.user_programs = user_programs
        self.max_body_bytes = max_body_bytes

    def _identify(self, request: Request, owner: Owner, body: dict[str, Any],
                  chat: bool) -> tuple[Identity, Inference | None]:
        identity = resolve_identity(request.headers, body, self.user_programs)
        if identity.program_id is not None or self.conversations is None:
            return identity, None
        inference = infer(self.conversations, owner, body, chat)
        if inference is None:
            return identity, None
        thread = identity.thread_id if identity.thread_given else inference.thread
        return Identity(inference.program_id, thread, "inferred", identity.thread_given), inference

    async def call(self, request: Request, owner: Owner, endpoint: str) -> Response | RelayStream:
        """POST /v1/chat/completions and /v1/completions."""
        body = parse_json_object(await read_body(request, self.max_body_bytes))
        chat = endpoint.endswith("chat/completions")
        identity, inference = self._identify(request, owner, body, chat)
        stream = body.get("stream") is True
        wants_usage = True
        if stream:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            wants_usage = bool(options.get("include_usage"))
            body["stream_options"] = {**options, "include_usage": True}
        prompt_tokens = estimate_prompt_tokens(body, self.chars_per_token)
        try:
            await self.sessions.pull(identity.program_id, owner)
            call = self.sessions.begin_call(identity, owner, prompt_tokens)
        except BaseException:
            if inference is not None:
                self.conversations.failed(inference)  # type: ignore[union-attr]
            raise
        flight = _Flight(self, call, endpoint, inference)
        try:
            context = program_xargs(call)
            if context:
                xargs = body.get("vllm_xargs")
                body["vllm_xargs"] = {**(xargs if isinstance(xargs, dict) else {}), **context}
            content = json.dumps(body, separators=(",", ":")).encode()
            resp, payload = await self._send(flight, request, endpoint, content, stream)
        except BaseException:
            flight.finish(None)
            raise
        engine = flight.engine
        assert engine is not None
        program = None if call.program.ephemeral else call.program_id
        if payload is not None:  # a complete answer (not a successful stream)
            usage = usage_from_body(payload) if resp.status == 200 else None
            if resp.status != 200:
                self.metrics.call_failed(engine.name, resp.status)
            elif inference is not None:
                flight.replies = replies_from_body(json_or_none(payload), chat)
            flight.finish(usage)
            return _raw_response(payload, resp.status, client_headers(resp, engine, program))
        builder = ReplyBuilder(chat) if inference is not None else None

        def done(result: StreamResult) -> None:
            step = None
            if result.usage and result.usage.completion_tokens > 1 and result.events > 1:
                step = (result.t_last - result.t_first) / (result.usage.completion_tokens - 1)
            if result.error is not None:
                self.metrics.call_failed(engine.name, result.error.status)
            usage = result.usage
            if usage is None and result.events:  # cut short: charge what was streamed
                usage = Usage(prompt_tokens=call.prompt_tokens, completion_tokens=result.events)
            if builder is not None and result.ended and result.error is None:
                flight.replies = builder.replies()
            flight.finish(usage, step)

        return RelayStream(resp, client_headers(resp, engine, program), sse=True,
                           strip_usage=not wants_usage,
                           on_error=lambda exc: self._in_flight_error(engine, exc), on_done=done,
                           on_chunk=builder.add if builder is not None else None)

    async def _send(self, flight: _Flight, request: Request, endpoint: str, content: bytes,
                    stream: bool) -> Sent:
        """Pick an engine and send; on a refused connection try the next engine (see module doc)."""
        call, tried = flight.call, set[int]()
        headers = upstream_headers(request, json_body=True)
        last: GatewayError | None = None
        while True:
            try:
                engine = self.pool.pick(call.program, call.prompt_tokens, frozenset(tried))
            except NoHealthyEngine:
                raise last or GatewayError(503, f"no healthy engine (0 of {len(self.pool)} up)") from None
            engine.load.active += 1
            flight.engine = engine
            self.metrics.call_sent(engine.name, endpoint, self.sessions.level_of(call.start_service))
            try:
                return await _watching(request.receive, self._fetch("POST", engine.url + endpoint,
                                                                    content, headers, stream))
            except ClientGone:
                self.metrics.call_failed(engine.name, 499)
                raise GatewayError(499, "client disconnected; the engine request was cancelled") from None
            except (TimeoutError, aiohttp.ClientError) as exc:
                if not never_sent(exc):
                    self.metrics.call_failed(engine.name, 502)
                    raise self._in_flight_error(engine, exc) from None
                engine.load.active -= 1
                flight.engine = None
                tried.add(engine.index)
                self.pool.mark_failed(engine, f"{type(exc).__name__}: {exc}")
                self.metrics.call_failed(engine.name, 502)
                last = GatewayError(502, f"cannot connect to {engine!r}: {exc}", engine.name)

    async def _fetch(self, method: str, url: str, content: bytes, headers: list[tuple[str, str]],
                     stream: bool) -> Sent:
        resp = await self.pool.session.request(method, url, data=content, headers=headers)
        if stream and resp.status == 200:
            return resp, None
        try:
            payload = await resp.read()
        except BaseException:
            resp.close()
            raise
        resp.release()
        return resp, payload

    def _in_flight_error(self, engine: Engine, exc: BaseException) -> GatewayError:
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if not isinstance(exc, TimeoutError):  # a slow engine is not a dead one
            self.pool.mark_failed(engine, detail)
        return GatewayError(502, f"{engine.name} ({engine.url}) failed while the call was in flight: "
                                 f"{detail}", engine.name)

    async def passthrough(self, request: Request) -> RelayStream:
        """Any other route: forwarded untouched to the least-used healthy engine."""
        engine, resp = await self._open_any(request)
        return RelayStream(resp, client_headers(resp, engine, None), sse=False, strip_usage=False,
                           on_error=lambda exc: self._in_flight_error(engine, exc),
                           on_done=lambda result: None)

    async def _open_any(self, request: Request) -> tuple[Engine, aiohttp.ClientResponse]:
        content = await request.body()
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        tried: set[int] = set()
        while True:
            healthy = [e for e in self.pool.engines if e.load.healthy and e.index not in tried]
            if not healthy:
                raise GatewayError(503, f"no healthy engine (0 of {len(self.pool)} up)")
            engine = min(healthy, key=lambda e: (e.load.active, e.index))
            try:
                return engine, await self.pool.session.request(
                    request.method, engine.url + url, data=content, headers=upstream_headers(request))
            except (TimeoutError, aiohttp.ClientError) as exc:
                if not never_sent(exc):
                    raise self._in_flight_error(engine, exc) from None
                tried.add(engine.index)
                self.pool.mark_failed(engine, f"{type(exc).__name__}: {exc}")


def _raw_response(payload: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> Response:
    response = Response(payload, status_code=status)
    # Keep the engine's headers (content-type etc.); Response already set content-length.
    response.raw_headers = [h for h in response.raw_headers if h[0] == b"content-length"] + headers
    return response


async def _watching(receive: Receive, work: Awaitable[Sent]) -> Sent:
    """Await `work`, but cancel it (closing the upstream connection) if the client disconnects."""
    sending = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait((sending, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not sending.done():
            sending.cancel()
            with contextlib.suppress(BaseException):
                await sending
    if sending.cancelled() or sending not in done:
        raise ClientGone()
    return sending.result()
