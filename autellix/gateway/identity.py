"""Which program and thread a call belongs to. First match wins (documented in docs/gateway.md):

1. `X-Program-ID` header (thread: `X-Thread-ID` header);
2. body fields `program_id` / `thread_id`;
3. `X-Session-ID` header (a session is a program; for clients that already send one);
4. the session headers of agent harnesses and routers (HARNESS_HEADERS, in that order), then OpenAI's
   `prompt_cache_key` body field: ids their clients already send, so unmodified agents are programs;
5. none of these: an anonymous one-call program, dropped from the table when the call finishes.

The thread follows the same order on its own (`X-Thread-ID`, then body `thread_id`, else "0").
Invariant: `program_id` / `thread_id` body fields are always removed before the body reaches an engine,
whichever source won, because vLLM does not know them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autellix.gateway.errors import GatewayError

DEFAULT_THREAD = "0"
MAX_ID = 256
HARNESS_HEADERS = (
    ("x-claude-code-session-id", "claude-code"),  # Claude Code, on every model request
    ("x-dynamo-session-id", "dynamo"),            # NVIDIA Dynamo's router (and clients written for it)
    ("x-smg-routing-key", "smg"),                 # SGLang model gateway's routing key
    ("session_id", "codex"),                      # Codex CLI
)
"""(header, source name): session ids that agent harnesses and routers send, tried in this order."""


@dataclass(frozen=True, slots=True)
class Identity:
    program_id: str | None
    """None: anonymous one-call program."""
    thread_id: str
    source: str
    """Where the program id came from: header, body, session or anonymous."""


def _valid(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID:
        raise GatewayError(400, f"{name}: must be a non-empty string of at most {MAX_ID} characters "
                                f"(not only whitespace), got {value!r:.40}")
    return value


def resolve_identity(headers: Mapping[str, str], body: dict[str, Any]) -> Identity:
    """Apply the precedence rules; pops `program_id` / `thread_id` from `body` (mutates it)."""
    body_program = body.pop("program_id", None)
    body_thread = body.pop("thread_id", None)
    thread: object = headers.get("x-thread-id") or body_thread
    thread_id = DEFAULT_THREAD if thread is None else _valid("thread_id", thread)
    header_program = headers.get("x-program-id")
    if header_program is not None:  # present but empty is an error, as for the body field
        return Identity(_valid("X-Program-ID", header_program), thread_id, "header")
    if body_program is not None:
        return Identity(_valid("program_id", body_program), thread_id, "body")
    session = headers.get("x-session-id")
    if session is not None:
        return Identity(_valid("X-Session-ID", session), thread_id, "session")
    for header, source in HARNESS_HEADERS:
        value = headers.get(header)
        if value:  # a harness's own header: an empty one is ignored, not an error of ours
            return Identity(_valid(header, value), thread_id, source)
    cache_key = body.get("prompt_cache_key")  # left in the body: it is OpenAI's field, not ours
    if isinstance(cache_key, str) and cache_key.strip():
        return Identity(_valid("prompt_cache_key", cache_key), thread_id, "prompt_cache_key")
    return Identity(None, thread_id, "anonymous")
