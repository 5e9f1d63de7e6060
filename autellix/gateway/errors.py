"""Gateway errors, rendered in the error shape of the API whose route they answer (SHAPES), so SDKs
raise their usual exception types.

OpenAI's shape (every route but the Messages API's): {"error": {"message": str, "type": str,
"code": int, "param": str | null}} plus "engine" when an engine is at fault. Anthropic's shape (the
Messages API, /v1/messages*): {"type": "error", "error": {"type": str, "message": str}}.
Status codes: 400 bad request, 401 bad key, 404 unknown program or response, 409 id taken, 413 body too
large, 426 WebSocket upgrade refused, 502 engine failed (the message names it), 503 no healthy engine.
"""

from __future__ import annotations

import json

from starlette.responses import Response

SHAPES = ("openai", "anthropic")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          409: "conflict_error", 499: "client_closed_request", 502: "bad_gateway",
          503: "service_unavailable"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}


def anthropic_type(status: int) -> str:
    """Anthropic's error `type` for an HTTP status."""
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_body(status: int, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": anthropic_type(status), "message": message}}


class GatewayError(Exception):
    """An error the gateway answers itself (not an engine's own response, which passes through)."""

    def __init__(self, status: int, message: str, engine: str | None = None, param: str | None = None,
                 shape: str = "openai") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.engine = engine
        self.param = param
        self.shape = shape
        """One of SHAPES: which API's error shape the answer takes."""

    def shaped(self, shape: str) -> GatewayError:
        """This error, answered in `shape` (the route's API: autellix.gateway.api.WireFormat.errors)."""
        self.shape = shape
        return self

    def body(self) -> dict[str, object]:
        if self.shape == "anthropic":
            return anthropic_body(self.status, self.message)
        error: dict[str, object] = {"message": self.message, "type": _TYPES.get(self.status, "error"),
                                    "code": self.status, "param": self.param}
        if self.engine is not None:
            error["engine"] = self.engine
        return {"error": error}

    def response(self) -> Response:
        headers = {"www-authenticate": "Bearer"} if self.status == 401 else None
        return Response(json.dumps(self.body()), status_code=self.status,
                        media_type="application/json", headers=headers)

    def sse_event(self) -> bytes:
        """The same error as one SSE event, for failures after a stream's headers were sent."""
        prefix = b"event: error\n" if self.shape == "anthropic" else b""
        return prefix + b"data: " + json.dumps(self.body()).encode() + b"\n\n"
