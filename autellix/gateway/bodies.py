"""Request bodies: read within a size limit (413 past it) and parsed once, as one JSON object (400
otherwise). Engine answers are their wire format's to parse (autellix.gateway.api)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from autellix.gateway.errors import GatewayError


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise GatewayError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    return body


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 once it passes `limit` bytes (before reading it all when declared)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"request body of {int(declared)} bytes is over the gateway's limit of "
                                f"{limit} bytes (--max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"request body is over the gateway's limit of {limit} bytes "
                                    "(--max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def query_limit(request: Request, default: int, most: int) -> int:
    """The `?limit=` of a paged list: 400 unless an integer from 1 to `most`."""
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise GatewayError(400, f"limit: must be an integer from 1 to {most}, got {raw!r:.40}", param="limit")
    return int(raw)
