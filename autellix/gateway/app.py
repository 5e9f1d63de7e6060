"""The gateway's ASGI app: routes only; the work lives in proxy, sessions, engines and metrics.

Routes:
  POST   /v1/chat/completions, /v1/completions,  proxied with program context (autellix.gateway.proxy;
         /v1/messages, /v1/responses             one wire format per API: autellix.gateway.api)
  POST   /v1/messages/count_tokens               to a healthy engine (no call: no program)
  GET    /v1/responses/{id}                      a response the gateway stored (gateway.response_store)
  GET    /v1/responses/{id}/input_items          the items it was generated from (paged)
  DELETE /v1/responses/{id}                      forget it
  GET    /v1/responses (WebSocket upgrade)       426: Codex then speaks HTTP
  GET    /v1/models                              from a healthy engine
  POST   /v1/programs                            open a program (session); returns its id
  GET    /v1/programs                            the caller's live programs (paged: ?limit=, ?after=)
  GET    /v1/programs/{id}                       its process-table entry
  DELETE /v1/programs/{id}                       end it
  POST   /v1/admin/engines                       {"engines": N}: scale the engines (Ray only)
  GET    /health                                 200 while at least one engine is healthy, else 503
  GET    /metrics                                Prometheus text
  *      anything else                           passed through untouched to a healthy engine
/health and /metrics need no API key; every other route does when keys are configured. Errors on the
Messages API's routes are in Anthropic's shape, on every other route in OpenAI's (autellix.gateway.errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp

from autellix.balance import Locality, make_balancer
from autellix.gateway.api import MESSAGES, WireFormat, wire_formats
from autellix.gateway.auth import KeyChecker
from autellix.gateway.bodies import parse_json_object, query_limit
from autellix.gateway.config import GatewayConfig
from autellix.gateway.conversations import ConversationIndex
from autellix.gateway.errors import GatewayError
from autellix.gateway.identity import Identifier, valid_id
from autellix.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from autellix.gateway.pausing import Pausing
from autellix.gateway.proxy import Proxy
from autellix.gateway.response_routes import RefuseWebSocket, StoredResponses
from autellix.gateway.response_store import ResponseStore
from autellix.gateway.sessions import ProgramIdTaken, Sessions, SharedTable
from autellix.gateway.upstreams import UpstreamPool
from autellix.programs import ProgramState, UnknownProgram

log = logging.getLogger("autellix.gateway")
Handler = Callable[[Request], Awaitable[ASGIApp]]


class EngineFleet(Protocol):
    """Engines that join, move and leave at run time, followed in the pool (config.dynamic_engines;
    implemented on Ray by autellix.deploy.ray_engines.RayEngines)."""

    @property
    def count(self) -> int:
        """Engines in the fleet now."""
        ...

    async def run(self, pool: UpstreamPool) -> None:
        """Keep the pool's upstreams in step with the fleet (runs until cancelled)."""
        ...

    async def scale(self, pool: UpstreamPool, n: int) -> None:
        """Grow or shrink to `n` engines."""
        ...

    async def sync(self, pool: UpstreamPool) -> None:
        """One round of `run` (the gateway awaits one before it serves)."""
        ...


class Gateway:
    """Shared state of one gateway process and its route handlers."""

    def __init__(self, config: GatewayConfig, ray_engines: EngineFleet | None = None,
                 shared: SharedTable | None = None) -> None:
        self.config = config
        self.ray_engines = ray_engines
        self.keys = KeyChecker(config.api_keys)
        balancer = (Locality(config.long_prompt) if config.balancer == "locality"
                    else make_balancer(config.balancer))
        self.pool = UpstreamPool(config.engines, balancer, config.health_interval,
                               config.health_timeout, config.metrics_interval)
        self.sessions = Sessions(config.policy, shared=shared)
        self.metrics = GatewayMetrics(self.pool, self.sessions)
        self.sessions.on_end = self._program_ended
        self.conversations = (ConversationIndex(config.policy.table_ttl,
                                                key=shared.hash_key if shared is not None else None,
                                                publish=shared.publish if shared is not None else None)
                              if config.infer_programs else None)
        self.identifier = Identifier(self.conversations, config.user_programs)
        self.pausing = Pausing(config.policy.admit_high, self._kv_capacity) if config.pause_gate else None
        if self.pausing is not None:
            self.pool.on_scraped = self.pausing.rebalance  # a capacity learned or changed applies now
        self.proxy = Proxy(self.pool, self.sessions, self.metrics, self.identifier, config.chars_per_token,
                           config.max_body_bytes, config.model_aliases, self.pausing, config.class_priority)
        self.responses = ResponseStore(config.responses_max_bytes, config.responses_ttl)
        self.apis = wire_formats(self.responses)
        self.stored = StoredResponses(self.responses, self.keys)
        self._notices: set[asyncio.Task] = set()

    def _kv_capacity(self) -> int | None:
        """The engines' KV cache in tokens, for the pause gate: configured, else as they report it."""
        return self.config.kv_capacity_tokens or self.pool.kv_capacity()

    def _program_ended(self, program: ProgramState, how: str) -> None:
        """A program left the table (DELETE, the SDK's exit, TTL): count it, drop it from the pause
        gate, and tell the engines so they release its KV (docs/gateway.md, "Program end")."""
        self.metrics.program_ended(program, how)
        if how == "anonymous" or program.ephemeral:
            return
        if self.pausing is not None:
            self.pausing.end(program)
        try:
            task = asyncio.get_running_loop().create_task(self.pool.end_program(program.program_id))
        except RuntimeError:  # no event loop (the table used outside the server): nothing to notify
            return
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        cfg = self.config
        await self.pool.open(cfg.connect_timeout, cfg.read_timeout, cfg.max_connections,
                             cfg.upstream_keepalive)
        if self.ray_engines is not None:  # know the engines before serving (EngineFleet.sync)
            await self.ray_engines.sync(self.pool)
        up = await self.pool.probe_all()
        log.info("gateway: %d of %d engine(s) healthy", up, len(self.pool))
        if self.pausing is not None:  # the KV capacity before the first call
            await self.pool.scrape_all()
            self.pausing.report()
        tasks = [asyncio.create_task(self.pool.run_health_loop()),
                 asyncio.create_task(self.sessions.run_expiry_loop())]
        if self.ray_engines is not None:
            tasks.append(asyncio.create_task(self.ray_engines.run(self.pool)))
        if self.sessions.shared is not None:
            links = self.conversations.links if self.conversations is not None else None
            tasks.append(asyncio.create_task(self.sessions.shared.run(links)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pool.close()

    # -- routes ------------------------------------------------------------------------------------

    def calls(self, api: WireFormat) -> Handler:
        """The handler of `api`'s route: its calls, with program context."""

        async def handle(request: Request) -> ASGIApp:
            return await self.proxy.call(request, self.keys.owner(request.headers), api)

        return handle

    async def count_tokens(self, request: Request) -> ASGIApp:
        self.keys.owner(request.headers)
        return await self.proxy.uncounted(request, MESSAGES)

    async def responses_upgrade(self, request: Request) -> ASGIApp:
        """GET /v1/responses: a WebSocket upgrade (Codex tries one) is refused with 426, so the client
        speaks HTTP; anything else passes through."""
        if request.headers.get("upgrade", "").lower() == "websocket":
            raise GatewayError(426, "WebSocket is not served here: use HTTP POST /v1/responses")
        return await self.passthrough(request)

    async def passthrough(self, request: Request) -> ASGIApp:
        self.keys.owner(request.headers)
        return await self.proxy.passthrough(request)

    async def create_program(self, request: Request) -> Response:
        owner = self.keys.owner(request.headers)
        raw = await request.body()
        body = parse_json_object(raw) if raw.strip() else {}
        program_id = body.get("program_id", body.get("id"))
        if program_id is not None:
            valid_id("program_id", program_id)  # the rule of ids named in calls
        try:
            program = self.sessions.create(owner, program_id)
        except ProgramIdTaken as exc:
            raise GatewayError(409, str(exc)) from None
        return JSONResponse(self._describe(program), status_code=201)

    async def list_programs(self, request: Request) -> Response:
        """The caller's live named programs, in id order, paged: `?limit=` (1-1000, default 100) and
        `?after=<id>` (the last id of the previous page)."""
        owner = self.keys.owner(request.headers)
        programs, more = self.sessions.listing(owner, request.query_params.get("after"),
                                               query_limit(request, 100, 1000))
        data = [self._describe(p) for p in programs]
        return JSONResponse({"object": "list", "data": data, "has_more": more,
                             "last_id": data[-1]["id"] if data else None})

    async def get_program(self, request: Request) -> Response:
        owner = self.keys.owner(request.headers)
        await self.sessions.pull(request.path_params["id"], owner, create=False)
        return JSONResponse(self._describe(self.sessions.lookup(request.path_params["id"], owner)))

    async def end_program(self, request: Request) -> Response:
        owner = self.keys.owner(request.headers)
        # described while it still has a source
        entry = self._describe(self.sessions.lookup(request.path_params["id"], owner))
        self.sessions.end(request.path_params["id"], owner)
        return JSONResponse({**entry, "deleted": True})

    async def scale_engines(self, request: Request) -> Response:
        """`{"engines": N}`: add engines (they take calls once healthy) or retire the last ones."""
        self.keys.owner(request.headers)
        if self.ray_engines is None:
            raise GatewayError(400, "scaling needs engines placed by Ray (`autellix serve --ray`); "
                                    "restart `autellix serve --engines N` instead")
        body = parse_json_object(await request.body())
        n = body.get("engines")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1024:
            raise GatewayError(400, f"engines: must be an integer from 1 to 1024, got {n!r:.40}")
        await self.ray_engines.scale(self.pool, n)
        return JSONResponse({"engines": self.ray_engines.count, "healthy": self.pool.healthy_count})

    async def health(self, request: Request) -> Response:
        up = self.pool.healthy_count
        engines = [{"name": e.name, "url": e.url, "healthy": e.load.healthy, "active": e.load.active,
                    "error": e.last_error} for e in self.pool.upstreams if not e.retired]
        return JSONResponse({"status": "ok" if up else "unavailable", "healthy": up,
                             "engines": engines}, status_code=200 if up else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    def _describe(self, program: ProgramState) -> dict[str, object]:
        return self.sessions.describe(program, [e.name for e in self.pool.upstreams])


def _guard(handler: Handler, shape: str = "openai") -> Handler:
    """Map domain errors to HTTP answers in the route's error `shape` (GatewayError as is; unknown
    program -> 404)."""

    async def wrapped(request: Request) -> ASGIApp:
        try:
            return await handler(request)
        except GatewayError as exc:
            return exc.shaped(shape).response()
        except UnknownProgram as exc:
            return GatewayError(404, str(exc), shape=shape).response()
        except ValueError as exc:  # invalid ids and values rejected by the process table
            return GatewayError(400, str(exc), shape=shape).response()

    return wrapped


def create_app(config: GatewayConfig, ray_engines: EngineFleet | None = None,
               shared: SharedTable | None = None) -> Starlette:
    """Build the gateway app; `app.state.gateway` holds its state (pool, sessions, metrics).
    `ray_engines`: engines placed at run time (by Ray: autellix.deploy.ray_engines), whose addresses the
    gateway follows (config.dynamic_engines); `shared`: the process table shared with other replicas
    (autellix.deploy.program_store)."""
    gw = Gateway(config, ray_engines, shared)
    routes = [
        *(Route(api.path, _guard(gw.calls(api), api.errors), methods=["POST"]) for api in gw.apis),
        Route("/v1/messages/count_tokens", _guard(gw.count_tokens, "anthropic"), methods=["POST"]),
        Route("/v1/responses", _guard(gw.responses_upgrade), methods=["GET"]),
        WebSocketRoute("/v1/responses", RefuseWebSocket()),
        Route("/v1/responses/{id}", _guard(gw.stored.get), methods=["GET"]),
        Route("/v1/responses/{id}", _guard(gw.stored.delete), methods=["DELETE"]),
        Route("/v1/responses/{id}/input_items", _guard(gw.stored.input_items), methods=["GET"]),
        Route("/v1/programs", _guard(gw.create_program), methods=["POST"]),
        Route("/v1/programs", _guard(gw.list_programs), methods=["GET"]),
        Route("/v1/programs/{id:path}", _guard(gw.get_program), methods=["GET"]),
        Route("/v1/programs/{id:path}", _guard(gw.end_program), methods=["DELETE"]),
        Route("/v1/admin/engines", _guard(gw.scale_engines), methods=["POST"]),
        Route("/health", gw.health, methods=["GET"]),
        Route("/metrics", gw.metrics_text, methods=["GET"]),
        Route("/{path:path}", _guard(gw.passthrough),
              methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    ]
    app = Starlette(routes=routes, lifespan=gw.lifespan)
    app.state.gateway = gw
    return app
