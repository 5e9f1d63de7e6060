"""Sending one request to an engine: the one pick-and-retry loop, for calls and pass-through alike.

Failure rules:
- The engine could not be connected to (the request never left): mark it unhealthy and try the next
  one the caller's `pick` offers; safe to resend, because the engine never saw the request. When none
  is left: the last connection error (502), or 503 when no engine was healthy to begin with.
- The engine failed after the request was sent (reset, dropped connection): for an idempotent request
  (GET, HEAD, OPTIONS: `/v1/models`, the engine's own reads), the same as above: tried on the next
  engine, each engine once; such requests are read whole before answering, so a reset mid-body is
  retried too. Any other request: 502 naming the engine, not retried (it may have run). Either way the
  engine is marked unhealthy until its next good probe (a timeout is not: a slow engine is not a dead
  one, and a timed-out request is never resent).
- The engine's own error responses (4xx, 5xx) are answers: they pass through unchanged.
- The client disconnected while waiting: the upstream request is cancelled (its connection closed), 499.
Invariant: for each engine tried, the caller's Attempt hears `sent` once, then `failed` and `unsent`
only if the request is to be sent elsewhere (the engine never saw it, or it is idempotent), so its
accounting (load, metrics) balances. Calls (POSTs) are resent only when never sent: a call runs at most
once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp
from starlette.requests import Request
from starlette.types import Receive

from autellix.gateway.errors import GatewayError
from autellix.gateway.streaming import wait_disconnect
from autellix.gateway.upstreams import NoHealthyEngine, Upstream, UpstreamPool

_DROP_REQUEST = frozenset({
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
    "proxy-authorization", "proxy-connection", "authorization", "x-api-key", "accept-encoding",
    "x-program-id", "x-thread-id", "x-session-id"})
_DROP_RESPONSE = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
                            b"date", b"server"})

Sent = tuple[aiohttp.ClientResponse, bytes | None]
"""An engine's response and its whole body, or None when the body is to be relayed as it comes."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods whose requests may run twice (RFC 9110 9.2.2): resent after a failure in flight."""
Pick = Callable[[frozenset[int]], Upstream]
"""The upstream for the request, given those that refused it already; raises NoHealthyEngine."""


class ClientGone(Exception):
    """The client disconnected before the engine answered."""


class Attempt(Protocol):
    """What a request's sender accounts for each engine it tries (see the module doc's invariant)."""

    def sent(self, upstream: Upstream) -> None: ...

    def unsent(self, upstream: Upstream) -> None: ...

    def failed(self, upstream: Upstream, status: int) -> None: ...


class Unaccounted:
    """An Attempt that keeps no accounts (pass-through requests are no calls)."""

    def sent(self, upstream: Upstream) -> None:
        pass

    def unsent(self, upstream: Upstream) -> None:
        pass

    def failed(self, upstream: Upstream, status: int) -> None:
        pass


def upstream_headers(request: Request, json_body: bool = False) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop, identity and gateway-auth ones. `json_body`: the body was
    re-serialised here, so its content type is ours to state."""
    drop = _DROP_REQUEST | {"content-type"} if json_body else _DROP_REQUEST
    headers = [(k, v) for k, v in request.headers.items() if k not in drop]
    headers.append(("accept-encoding", "identity"))  # SSE is parsed here: no compression upstream
    if json_body:
        headers.append(("content-type", "application/json"))
    return headers


def client_headers(resp: aiohttp.ClientResponse, upstream: Upstream,
                   program: str | None) -> list[tuple[bytes, bytes]]:
    """The engine's response headers for the client, plus X-Autellix-Engine (and -Program)."""
    headers = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in _DROP_RESPONSE]
    headers.append((b"x-autellix-engine", upstream.name.encode()))
    if program is not None:
        headers.append((b"x-autellix-program", program.encode()))
    return headers


def never_sent(exc: BaseException) -> bool:
    """The engine could not be reached at all, so the request is safe to send elsewhere."""
    return isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))


def resendable(method: str, exc: BaseException) -> bool:
    """Safe to send to another engine after `exc`: never sent, or an idempotent request whose engine
    dropped the connection (a timeout is no proof of death: never resent)."""
    if never_sent(exc):
        return True
    return (method in IDEMPOTENT and not isinstance(exc, TimeoutError)
            and isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)))


class Forwarder:
    """Sends requests to the pool's upstreams (one aiohttp session, the pool's)."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    async def send(self, request: Request, path: str, content: bytes, headers: list[tuple[str, str]],
                   pick: Pick, attempt: Attempt, relay: Callable[[int], bool]) -> tuple[Upstream, Sent]:
        """Send `request.method path` to the first upstream that takes it (module doc); `relay(status)`:
        leave the body unread, to be relayed as it comes (never for idempotent requests: read whole, so
        that a failure mid-body can still be retried)."""
        method = request.method
        if method in IDEMPOTENT:
            relay = _whole
        tried: set[int] = set()
        last: GatewayError | None = None
        while True:
            try:
                upstream = pick(frozenset(tried))
            except NoHealthyEngine:
                raise last or GatewayError(503, f"no healthy engine (0 of {len(self.pool)} up)") from None
            attempt.sent(upstream)
            fetch = self._fetch(method, upstream.url + path, content, headers, relay)
            try:
                return upstream, await _watching(request.receive, fetch)
            except ClientGone:
                attempt.failed(upstream, 499)
                raise GatewayError(499, "client disconnected; the engine request was cancelled") from None
            except (TimeoutError, aiohttp.ClientError) as exc:
                attempt.failed(upstream, 502)
                if not resendable(method, exc):
                    raise self.in_flight_error(upstream, exc) from None
                attempt.unsent(upstream)
                tried.add(upstream.index)
                self.pool.mark_failed(upstream, f"{type(exc).__name__}: {exc}")
                last = (GatewayError(502, f"cannot connect to {upstream!r}: {exc}", upstream.name)
                        if never_sent(exc) else self.in_flight_error(upstream, exc))

    async def _fetch(self, method: str, url: str, content: bytes, headers: list[tuple[str, str]],
                     relay: Callable[[int], bool]) -> Sent:
        resp = await self.pool.session.request(method, url, data=content, headers=headers)
        if relay(resp.status):
            return resp, None
        try:
            payload = await resp.read()
        except BaseException:
            resp.close()
            raise
        resp.release()
        return resp, payload

    def in_flight_error(self, upstream: Upstream, exc: BaseException) -> GatewayError:
        """The 502 for an engine that failed with the request in flight (marked unhealthy unless it
        was only slow)."""
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if not isinstance(exc, TimeoutError):  # a slow engine is not a dead one
            self.pool.mark_failed(upstream, detail)
        return GatewayError(502, f"{upstream.name} ({upstream.url}) failed while the call was in flight: "
                                 f"{detail}", upstream.name)


def _whole(status: int) -> bool:
    return False


async def _watching(receive: Receive, work: Awaitable[Sent]) -> Sent:
    """Await `work`, but cancel it (closing the upstream connection) if the client disconnects."""
    sending = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait((sending, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not sending.done():
            sending.cancel()
            with contextlib.suppress(BaseException):
                await sending
    if sending.cancelled() or sending not in done:
        raise ClientGone()
    return sending.result()
