"""Gateway errors, rendered in the OpenAI error shape so SDKs raise their usual exception types.

Body: {"error": {"message": str, "type": str, "code": int, "param": null}} plus "engine" when an engine
is at fault. Status codes: 400 bad request, 401 bad key, 404 unknown program, 409 id taken,
502 engine failed (the message names it), 503 no healthy engine.
"""

from __future__ import annotations

import json

from starlette.responses import Response

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          409: "conflict_error", 499: "client_closed_request", 502: "bad_gateway",
          503: "service_unavailable"}


class GatewayError(Exception):
    """An error the gateway answers itself (not an engine's own response, which passes through)."""

    def __init__(self, status: int, message: str, engine: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.engine = engine

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"message": self.message, "type": _TYPES.get(self.status, "error"),
                                    "code": self.status, "param": None}
        if self.engine is not None:
            error["engine"] = self.engine
        return {"error": error}

    def response(self) -> Response:
        headers = {"www-authenticate": "Bearer"} if self.status == 401 else None
        return Response(json.dumps(self.body()), status_code=self.status,
                        media_type="application/json", headers=headers)

    def sse_event(self) -> bytes:
        """The same error as one SSE event, for failures after a stream's headers were sent."""
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"
