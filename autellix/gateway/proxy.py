"""Forwarding calls to engines: program context in, usage out.

Life of a call (each step in one module, each payload parsed once): read the body (413 past
`max_body_bytes`) and parse it (400 if malformed: autellix.gateway.bodies) -> its model alias applied
(`alias_model`) -> its class, when it names one (autellix.gateway.classes; 400 for a bad one) -> what
it continues, for a stateful API (the Responses API's `previous_response_id`: 404 when unknown; its
input expanded to the whole history) -> its identity (autellix.gateway.identity: named, else inferred
from the conversation; 400 for an unreadable message list) -> `Sessions.begin_call` (404 for another
owner's program; the program takes the call's class) -> the body for the engine, with usage requested,
the program context added and `priority` dropped (the call's wire format: autellix.gateway.api) -> an
engine picked by the balancer (once ThunderAgent's pause gate lets the call's program run, with
`--policy thunderagent`: autellix.gateway.pausing), sent, retried elsewhere only if it was never reached
(autellix.gateway.forward) -> the answer read once, or its stream relayed (autellix.gateway.streaming)
-> the call charged and its reply remembered (autellix.gateway.flight), and what a stateful API keeps
of a successful answer kept (WireFormat.begin's Turn).

Invariant: every call that `begin_call` opened is finished exactly once (`Flight.finish`), and every
inferred identity is settled exactly once, whatever path the call takes. Engine error answers (4xx, 5xx)
pass through unchanged, except into the route's API error shape where the engine used another
(WireFormat.engine_error); see autellix.gateway.forward for failures to reach an engine.
"""

from __future__ import annotations

import dataclasses
import json
from fnmatch import fnmatchcase
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from autellix.context import to_xargs
from autellix.gateway.api import Usage, WireFormat
from autellix.gateway.auth import Owner
from autellix.gateway.bodies import parse_json_object, read_body
from autellix.gateway.classes import call_class
from autellix.gateway.flight import Flight
from autellix.gateway.forward import Forwarder, Unaccounted, client_headers, upstream_headers
from autellix.gateway.identity import Identifier, Identity
from autellix.gateway.metrics import GatewayMetrics
from autellix.gateway.pausing import Pausing
from autellix.gateway.sessions import Sessions
from autellix.gateway.streaming import RelayStream, StreamResult
from autellix.gateway.upstreams import UpstreamPool
from autellix.programs import Call


def program_xargs(call: Call, batch: bool | None = None) -> dict[str, str | float]:
    """Program context for the engine's Autellix scheduler (autellix.context; docs/gateway.md): ids, the
    service and wait snapshots at arrival, and the class: the one the call names (`batch`), else
    "batch" for a batch program, so an engine that never saw the marked call still knows (an unmarked
    call of an interactive program sends none: another replica may know better). Anonymous calls send
    nothing: the engine plugin then runs them as one-call programs without keeping a table entry for
    each (their snapshots would be 0 anyway)."""
    if call.program.ephemeral:
        return {}
    if batch is None and call.program.batch:
        batch = True
    return to_xargs(call.program_id, call.thread, call.start_service, call.start_wait, batch)


def alias_model(body: dict[str, Any], aliases: tuple[tuple[str, str], ...]) -> None:
    """Replace `body["model"]` by the served model of the first alias pattern it matches (fnmatch)."""
    model = body.get("model")
    if isinstance(model, str):
        for pattern, served in aliases:
            if fnmatchcase(model, pattern):
                body["model"] = served
                return


class Proxy:
    """Calls (with program context) and pass-through requests, from the client to an engine and back."""

    def __init__(self, pool: UpstreamPool, sessions: Sessions, metrics: GatewayMetrics,
                 identifier: Identifier, chars_per_token: float, max_body_bytes: int = 32 << 20,
                 aliases: tuple[tuple[str, str], ...] = (), pausing: Pausing | None = None,
                 class_priority: bool = False) -> None:
        self.pool = pool
        self.sessions = sessions
        self.metrics = metrics
        self.identifier = identifier
        self.forwarder = Forwarder(pool)
        self.chars_per_token = chars_per_token
        self.max_body_bytes = max_body_bytes
        self.aliases = aliases
        self.pausing = pausing
        self.class_priority = class_priority
        """Stock engines: a batch program's calls carry vLLM's `priority` 1 (GatewayConfig)."""

    async def call(self, request: Request, owner: Owner, api: WireFormat) -> Response | RelayStream:
        """A call of `api` (POST at its path; see the module doc)."""
        body = parse_json_object(await read_body(request, self.max_body_bytes))
        alias_model(body, self.aliases)
        batch = call_class(request.headers, body)
        turn = api.begin(body, owner)
        identity = self.identifier.identify(request.headers, body, owner, api,
                                            turn.chained if turn is not None else None)
        try:
            identity = await self._placed(identity)
            await self.sessions.pull(identity.program_id, owner)
            call = self.sessions.begin_call(identity, owner, api.prompt_tokens(body, self.chars_per_token),
                                            batch)
        except BaseException:
            self.identifier.settle(identity, [])
            raise
        flight = Flight(self.sessions, self.metrics, self.identifier, call, identity, api.path)
        try:
            if self.pausing is not None and await self.pausing.enter(call, request.receive):
                flight.pausing = self.pausing
            priority = 1 if self.class_priority and call.program.batch else 0
            prepared = api.prepare(body, program_xargs(call, batch), priority)
            upstream, (resp, payload) = await self.forwarder.send(
                request, api.path, prepared.content, upstream_headers(request, json_body=True),
                pick=lambda tried: self.pool.pick(call.program, call.prompt_tokens, tried), attempt=flight,
                relay=lambda status: prepared.stream and status == 200)
        except BaseException:
            flight.finish(None)
            raise
        collect = identity.inference is not None
        # An inferred call's links reach the shared index before its client sees the answer, so that
        # its next call, through any replica, finds them (autellix.gateway.conversations).
        shared = self.sessions.shared
        settle = shared.settled if collect and shared is not None else None
        program_id = None if call.program.ephemeral else call.program_id
        headers = client_headers(resp, upstream, program_id)
        if payload is not None:  # a complete answer (not a successful stream)
            if resp.status == 200:
                answer = api.read_answer(payload, collect)
                flight.replies = answer.replies
                flight.finish(answer.usage)
                if turn is not None:
                    turn.answered(answer.record, program_id, call.thread)
                if settle is not None:
                    await settle()
            else:
                self.metrics.call_failed(upstream.name, resp.status)
                flight.finish(None)
                payload = api.engine_error(resp.status, payload)
            return _raw_response(payload, resp.status, headers)
        reader = api.stream_reader(collect)

        def done(result: StreamResult) -> None:
            usage, step = reader.usage, None
            if usage and usage.completion_tokens > 1 and result.events > 1:
                step = (result.t_last - result.t_first) / (usage.completion_tokens - 1)
            if result.error is not None:
                self.metrics.call_failed(upstream.name, result.error.status)
            if usage is None and result.events:  # cut short: charge what was streamed
                usage = Usage(prompt_tokens=call.prompt_tokens, completion_tokens=result.events)
            if result.ended and result.error is None:
                flight.replies = reader.replies()
            flight.finish(usage, step)
            if result.ended and result.error is None and turn is not None:
                turn.answered(reader.record, program_id, call.thread)

        return RelayStream(resp, headers, reader, strip_usage=not prepared.wants_usage, on_done=done,
                           on_error=lambda exc: self.forwarder.in_flight_error(upstream, exc)
                           .shaped(api.errors), settle=settle)

    async def uncounted(self, request: Request, api: WireFormat) -> Response:
        """A request of `api`'s that is no call (POST /v1/messages/count_tokens): its model alias
        applied, sent to the least-used healthy engine, its errors in the API's shape."""
        body = parse_json_object(await read_body(request, self.max_body_bytes))
        alias_model(body, self.aliases)
        content = json.dumps(body, separators=(",", ":")).encode()
        upstream, (resp, payload) = await self.forwarder.send(
            request, request.url.path, content, upstream_headers(request, json_body=True),
            pick=self.pool.pick_any, attempt=Unaccounted(), relay=lambda status: False)
        assert payload is not None
        if resp.status != 200:
            payload = api.engine_error(resp.status, payload)
        return _raw_response(payload, resp.status, client_headers(resp, upstream, None))

    async def _placed(self, identity: Identity) -> Identity:
        """An inferred call this replica's index could not place (it would open a new program), placed
        by the shared index when another replica saw its conversation (autellix.gateway.conversations)."""
        inference, shared = identity.inference, self.sessions.shared
        if shared is None or inference is None or inference.query is None:
            return identity
        found = await shared.match(inference.query)
        if found is None:
            return identity
        program, thread, how = found
        placed = dataclasses.replace(inference, program_id=program, thread=thread, how=how, query=None)
        return dataclasses.replace(identity, program_id=program, inference=placed,
                                   thread_id=identity.thread_id if identity.thread_given else thread)

    async def passthrough(self, request: Request) -> Response | RelayStream:
        """Any other route: forwarded untouched to the least-used healthy engine."""
        content = await request.body()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        upstream, (resp, payload) = await self.forwarder.send(
            request, path, content, upstream_headers(request), pick=self.pool.pick_any,
            attempt=Unaccounted(), relay=lambda status: True)
        if payload is not None:  # an idempotent request, read whole (autellix.gateway.forward)
            return _raw_response(payload, resp.status, client_headers(resp, upstream, None))
        return RelayStream(resp, client_headers(resp, upstream, None), None,
                           on_error=lambda exc: self.forwarder.in_flight_error(upstream, exc),
                           on_done=lambda result: None)


def _raw_response(payload: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> Response:
    response = Response(payload, status_code=status)
    # Keep the engine's headers (content-type etc.); Response already set content-length.
    response.raw_headers = [h for h in response.raw_headers if h[0] == b"content-length"] + headers
    return response
