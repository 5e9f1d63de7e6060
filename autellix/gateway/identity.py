"""Which program and thread a call belongs to. First match wins (documented in docs/gateway.md):

1. `X-Program-ID` header (thread: `X-Thread-ID` header);
2. body fields `program_id` / `thread_id`;
3. `X-Session-ID` header (a session is a program; for clients that already send one; vLLM reads the
   same header);
4. vLLM's own `session_id` body field, then `vllm_xargs.session_id` (both left for vLLM to read);
5. the session headers of agent harnesses and routers (HARNESS_HEADERS, in that order), then Claude
   Code's session in `metadata.user_id` (a JSON string holding `session_id`, or the older
   `..._session_<id>` form), then OpenAI's `prompt_cache_key` body field: ids their clients already
   send, so unmodified agents are programs;
6. the Responses API's `previous_response_id` (the program and thread of the response it continues,
   kept by the gateway: autellix.gateway.api.responses), then its `conversation` (an id, or an object
   with one);
7. only when enabled (`user_programs`): OpenAI's `user` body field (off by default, because one user
   may run many programs at once);
8. none of these: the program is inferred from the conversation (autellix.gateway.conversations,
   through the call's wire format: autellix.gateway.api) unless that is off or the call cannot be
   matched; then it is `anonymous`, a one-call program dropped from the table when it finishes.

Rules 1-7 are `resolve_identity`; `Identifier` applies all eight, and is the one place that decides a
call's program and, when the call ends, tells the conversation index what its reply was.

The thread follows its own order: `X-Thread-ID`, then body `thread_id`; else a harness's agent headers
(`harness_thread`: Claude Code's `x-claude-code-agent-id`, its parent `x-claude-code-parent-agent-id`;
Codex's `thread-id` when it is not the session's own id, its parent `x-codex-parent-thread-id`, or
`x-openai-subagent`), which also name the thread's parent ("0": the main thread); else the thread of the
continued response; else "0".
Invariant: `program_id` / `thread_id` body fields are always removed before the body reaches an engine,
whichever source won, because vLLM does not know them; every other field stays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from autellix.gateway.api import WireFormat
from autellix.gateway.auth import Owner
from autellix.gateway.conversations import ConversationIndex, Inference, MalformedMessages
from autellix.gateway.errors import GatewayError
from autellix.programs import MAX_ID

DEFAULT_THREAD = "0"
HARNESS_HEADERS = (
    ("x-claude-code-session-id", "claude-code"),  # Claude Code, on every model request
    ("x-dynamo-session-id", "dynamo"),            # NVIDIA Dynamo's router (and clients written for it)
    ("x-smg-routing-key", "smg"),                 # SGLang model gateway's routing key
    ("session-id", "codex"),                      # Codex CLI (0.16x on)
    ("session_id", "codex"),                      # Codex CLI, older releases
    ("thread-id", "codex"),                       # Codex CLI: the thread, when no session is sent
    ("x-opencode-session", "opencode"),           # OpenCode
    ("x-gateway-inference-fairness-id", "llm-d"), # Gateway API Inference Extension / llm-d flow control
)
"""(header, source name): session ids that agent harnesses and routers send, tried in this order."""


@dataclass(frozen=True, slots=True)
class Identity:
    program_id: str | None
    """None: anonymous one-call program."""
    thread_id: str
    source: str
    """Where the program id came from (docs/gateway.md, "Which program a call belongs to")."""
    thread_given: bool = False
    """The client named the thread itself (`X-Thread-ID` or body `thread_id`)."""
    inference: Inference | None = None
    """source "inferred": the conversation index's decision, settled when the call ends."""
    parent: str | None = None
    """The thread that started this one (a subagent's parent), when the client says so."""


def valid_id(name: str, value: object) -> str:
    """`value` if it is a usable program or thread id, else 400 naming `name`."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID:
        raise GatewayError(400, f"{name}: must be a non-empty string of at most {MAX_ID} characters "
                                f"(not only whitespace), got {value!r:.40}")
    return value


_LEGACY_SESSION = re.compile(r"_session_([0-9A-Za-z-]{1,128})$")


def claude_session(body: dict[str, Any]) -> str | None:
    """Claude Code's session id in `metadata.user_id`: a JSON string holding `session_id` (2.1 on), or
    `user_<hash>_account_<uuid>_session_<uuid>` (older releases); None when absent or unreadable."""
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user, str):
        return None
    if user.startswith("{"):
        try:
            session = json.loads(user).get("session_id")
        except (ValueError, AttributeError):
            return None
        return session if isinstance(session, str) and session.strip() else None
    match = _LEGACY_SESSION.search(user)
    return match.group(1) if match else None


def harness_thread(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(thread, parent thread) from a harness's agent headers (module doc), or None."""
    agent = headers.get("x-claude-code-agent-id")
    if agent:
        return valid_id("x-claude-code-agent-id", agent), headers.get("x-claude-code-parent-agent-id") \
            or DEFAULT_THREAD
    session = headers.get("session-id") or headers.get("session_id")
    thread = headers.get("thread-id")
    if thread and session and thread != session:
        parent = headers.get("x-codex-parent-thread-id")
        return valid_id("thread-id", thread), parent if parent and parent != session else DEFAULT_THREAD
    subagent = headers.get("x-openai-subagent")
    if subagent:
        return valid_id("x-openai-subagent", f"subagent:{subagent}"), DEFAULT_THREAD
    return None


def resolve_identity(headers: Mapping[str, str], body: dict[str, Any], user_programs: bool = False,
                     chained: tuple[str, str] | None = None) -> Identity:
    """Apply the precedence rules; pops `program_id` / `thread_id` from `body` (mutates it). `chained`:
    the (program, thread) of the response the call continues (rule 6)."""
    body_program = body.pop("program_id", None)
    body_thread = body.pop("thread_id", None)
    thread: object = headers.get("x-thread-id") or body_thread
    given = thread is not None
    thread_id = valid_id("thread_id", thread) if given else DEFAULT_THREAD
    parent = None
    if not given:
        agent = harness_thread(headers)
        if agent is not None:
            thread_id, parent = agent

    def named(program: object, field: str, source: str) -> Identity:
        return Identity(valid_id(field, program), thread_id, source, given, parent=parent)

    header_program = headers.get("x-program-id")
    if header_program is not None:  # present but empty is an error, as for the body field
        return named(header_program, "X-Program-ID", "header")
    if body_program is not None:
        return named(body_program, "program_id", "body")
    session = headers.get("x-session-id")
    if session is not None:
        return named(session, "X-Session-ID", "session")
    xargs = body.get("vllm_xargs")
    for value, field in ((body.get("session_id"), "session_id"),
                         (xargs.get("session_id") if isinstance(xargs, dict) else None,
                          "vllm_xargs.session_id")):
        if value is not None:
            return named(value, field, "vllm-session")
    for header, source in HARNESS_HEADERS:
        value = headers.get(header)
        if value:  # a harness's own header: an empty one is ignored, not an error of ours
            return named(value, header, source)
    session = claude_session(body)
    if session is not None:
        return named(session, "metadata.user_id", "claude-code")
    value = body.get("prompt_cache_key")  # left in the body, as are all OpenAI's fields
    if isinstance(value, str) and value.strip():
        return named(value, "prompt_cache_key", "prompt_cache_key")
    if chained is not None:
        program, chained_thread = chained
        if given or parent is not None:
            return named(program, "previous_response_id", "previous_response")
        return Identity(program, chained_thread, "previous_response", given)
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if conversation is not None:
        return named(conversation, "conversation", "conversation")
    value = body.get("user")
    if user_programs and isinstance(value, str) and value.strip():
        return named(value, "user", "user")
    return Identity(None, thread_id, "anonymous", given, parent=parent)


class Identifier:
    """Which program and thread each call belongs to (rules 1-7 of the module doc)."""

    def __init__(self, conversations: ConversationIndex | None, user_programs: bool = False) -> None:
        self.conversations = conversations
        """None: inference is off (`--infer-programs off`)."""
        self.user_programs = user_programs

    def identify(self, headers: Mapping[str, str], body: dict[str, Any], owner: Owner,
                 api: WireFormat, chained: tuple[str, str] | None = None) -> Identity:
        """The call's identity; pops `program_id` / `thread_id` from `body`. An inferred identity must
        be settled (`settle`) exactly once, whatever happens to the call."""
        identity = resolve_identity(headers, body, self.user_programs, chained)
        if identity.program_id is not None or self.conversations is None:
            return identity
        try:
            inference = api.infer(self.conversations, owner, body)
        except MalformedMessages as exc:
            raise GatewayError(400, f"malformed message list: {exc}") from None
        if inference is None:
            return identity
        if identity.thread_given or identity.parent is not None:
            return replace(identity, program_id=inference.program_id, source="inferred", inference=inference)
        return Identity(inference.program_id, inference.thread, "inferred", False, inference)

    def settle(self, identity: Identity, replies: list[Any]) -> None:
        """The call ended: the index remembers its replies, or, with none (it failed), gives its claim
        back so that a retry continues where it would have."""
        index, inference = self.conversations, identity.inference
        if index is None or inference is None:
            return
        if replies:
            index.replied(inference, replies)
        else:
            index.failed(inference)
