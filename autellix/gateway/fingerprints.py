"""What the conversation index (autellix.gateway.conversations) reads from a message: its fingerprint,
and the stable hash that makes keys agree between replicas.

What "the same message" means (robust to what clients do to histories): role, the text (a string, or
the text parts of a content list joined, surrounding whitespace stripped), the id and function name of
each tool call (arguments are re-serialised by some clients), and a tool message's `tool_call_id`.
Every other field (name, reasoning_content, refusal, ...) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import secrets

KEY_BYTES = 16


class MalformedMessages(ValueError):
    """A message list the gateway cannot read (the proxy answers 400)."""


def message_text(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        raise MalformedMessages(f"{where}.content: must be a string, a list of parts or null, "
                                f"got {type(content).__name__}")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise MalformedMessages(f"{where}.content[{j}]: must be an object with a string `type`")
        kind = part["type"]
        value = part.get("text") if kind == "text" else part.get(kind)
        if kind == "text" and not isinstance(value, str):
            raise MalformedMessages(f"{where}.content[{j}].text: must be a string")
        texts.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str))
    return "".join(texts).strip()


def fingerprint(message: object, index: int | str = -1) -> tuple[str, ...]:
    """What identifies a message (module doc); raises MalformedMessages naming `messages[index]`."""
    if type(message) is dict:  # the common case first: plain text, no tool calls (every call, every message)
        role, content = message.get("role"), message.get("content")
        if type(content) is str and type(role) is str and role and role != "tool" \
                and not message.get("tool_calls"):
            return role, content.strip()
    return _fingerprint(message, index if isinstance(index, str) else f"messages[{index}]")


def _fingerprint(message: object, where: str) -> tuple[str, ...]:
    if not isinstance(message, dict):
        raise MalformedMessages(f"{where}: must be an object, got {type(message).__name__}")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise MalformedMessages(f"{where}.role: must be a non-empty string")
    parts = [role, message_text(message.get("content"), where)]
    calls = message.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise MalformedMessages(f"{where}.tool_calls: must be a list")
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise MalformedMessages(f"{where}.tool_calls: each needs a `function` object")
            parts += [str(call.get("id", "")), str(function.get("name", ""))]
    if role == "tool":
        parts.append(str(message.get("tool_call_id", "")))
    return tuple(parts)




class Hasher:
    """The stable hash: H(previous key, strings) -> 64-bit key, keyed BLAKE2b over the previous key and
    each string's length and UTF-8 bytes (lengths make ("ab", "c") and ("a", "bc") differ). The same in
    every process that has the key (a deployment's replicas share it); secret, so clients cannot aim for
    collisions."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(KEY_BYTES)
        self._base = hashlib.blake2b(digest_size=8, key=self.key)

    def __call__(self, previous: int, parts: tuple[str, ...] | str) -> int:
        h = self._base.copy()
        h.update(previous.to_bytes(8, "little", signed=True))
        for part in (parts,) if isinstance(parts, str) else parts:
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return int.from_bytes(h.digest(), "little", signed=True)


