"""Optional API keys (`Authorization: Bearer KEY`, or `x-api-key: KEY` as Anthropic clients send it) and
program ownership.

A caller's *owner* is a short fingerprint of its key (never the key itself), or None when the gateway
runs without keys. Sessions record the owner of each program; a program is invisible to every other
owner (reads, ends and calls tagged with its id all answer 404, so ids of other tenants do not leak).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from autellix.gateway.errors import GatewayError

Owner = str | None


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class KeyChecker:
    """Maps an Authorization header to an owner; raises 401 for a missing or unknown key."""

    def __init__(self, keys: frozenset[str]) -> None:
        # fingerprint -> key; comparison below is constant-time on the key itself.
        self._keys = {fingerprint(k): k for k in keys}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def owner(self, headers: Mapping[str, str]) -> Owner:
        if not self._keys:
            return None
        header = headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            key = headers.get("x-api-key", "")
        if not key.strip():
            raise GatewayError(401, "missing API key: send `Authorization: Bearer <key>` or "
                                    "`x-api-key: <key>`")
        key = key.strip()
        fp = fingerprint(key)
        known = self._keys.get(fp)
        if known is None or not hmac.compare_digest(known, key):
            raise GatewayError(401, "invalid API key")
        return fp
