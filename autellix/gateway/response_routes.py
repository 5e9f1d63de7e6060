"""The Responses API's stored responses as routes (GET, DELETE, input items) and the refusal of a
WebSocket upgrade on /v1/responses. The store itself is autellix.gateway.response_store; POST
/v1/responses is a call like any other (autellix.gateway.api.responses).

Invariant: a response another owner stored, an unknown, expired or deleted id, and a `store: false` call
are all answered the same 404 in OpenAI's shape, so ids leak nothing across API keys.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from autellix.gateway.auth import KeyChecker
from autellix.gateway.bodies import query_limit
from autellix.gateway.errors import GatewayError
from autellix.gateway.response_store import ResponseStore, Stored, item_page


class StoredResponses:
    def __init__(self, store: ResponseStore, keys: KeyChecker) -> None:
        self.store, self.keys = store, keys

    def _visible(self, request: Request) -> Stored:
        response_id = request.path_params["id"]
        entry = self.store.get(response_id, self.keys.owner(request.headers))
        if entry is None or entry.response is None:
            raise _no_response(response_id)
        return entry

    async def get(self, request: Request) -> Response:
        """A stored response object."""
        return Response(self._visible(request).response, media_type="application/json")

    async def input_items(self, request: Request) -> Response:
        """The items a stored response was generated from (its chain's, then its own input), in OpenAI's
        list shape: `?order=` asc or desc (default desc), `?limit=` 1-100 (default 20), `?after=<item id>`."""
        entry = self._visible(request)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise GatewayError(400, f"order: must be 'asc' or 'desc', got {order!r:.40}", param="order")
        after = request.query_params.get("after")
        try:
            page = item_page(entry.input_history(), entry.id, order, after, query_limit(request, 20, 100))
        except KeyError:
            raise GatewayError(400, f"after: {after!r:.80} is not an input item of {entry.id}",
                               param="after") from None
        return JSONResponse(page)

    async def delete(self, request: Request) -> Response:
        response_id = request.path_params["id"]
        if not self.store.delete(response_id, self.keys.owner(request.headers)):
            raise _no_response(response_id)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


def _no_response(response_id: str) -> GatewayError:
    return GatewayError(404, f"Response with id '{response_id:.200}' not found.")


class RefuseWebSocket:
    """A WebSocket handshake on /v1/responses (Codex tries one): 426 where the server can answer it over
    HTTP (the ASGI denial-response extension), so the client falls back to HTTP; else the handshake is
    closed. An ASGI app, not a function: Starlette would wrap a function as a WebSocket session."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "websocket.http.response" in (scope.get("extensions") or {}):
            body = GatewayError(426, "WebSocket is not served here: use HTTP POST /v1/responses").response()
            await send({"type": "websocket.http.response.start", "status": 426,
                        "headers": [(b"content-type", b"application/json"), (b"upgrade", b"HTTP/1.1")]})
            await send({"type": "websocket.http.response.body", "body": body.body})
        else:
            await send({"type": "websocket.close", "code": 1008})
