"""Relaying an engine's streamed response to the client (SSE for calls; raw bytes for pass-through).

Why a custom ASGI response instead of Starlette's StreamingResponse: the upstream must be closed the
moment the client goes away. uvicorn (ASGI spec 2.3) silently drops writes to a disconnected client, so
a disconnect is only seen on `receive()`. `RelayStream` races the pump against a disconnect watcher and,
whichever ends first, closes the upstream response in `finally`. Closing an unfinished aiohttp response
drops its connection, and vLLM aborts a request whose connection is gone: no leaked engine work.

SSE handling: events are split on blank lines and each is handed once to the call's StreamReader (its
wire format's: autellix.gateway.api), which records usage (and replies, when collected) and says what
the event is: content (forwarded and timed), framing (forwarded), usage only (stripped when the client
did not ask for usage itself) or the end of the stream. Without a reader (pass-through) bytes are
relayed as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from starlette.types import Message, Receive, Scope, Send

from autellix.gateway.api import Event, StreamReader
from autellix.gateway.errors import GatewayError


@dataclass(slots=True)
class StreamResult:
    """What a relay saw: content events and their times, the outcome (usage: the reader's)."""

    events: int = 0
    t_first: float = 0.0
    t_last: float = 0.0
    disconnected: bool = False
    error: GatewayError | None = None
    ended: bool = False  # the engine ended the stream ([DONE]; its connection may stay open a little longer)


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (call only after the request body has been read)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


class RelayStream:
    """An ASGI response streaming `upstream` to the client; `on_done(result)` runs exactly once: when
    the upstream is exhausted (before the client's last byte) or else when the relay ends."""

    def __init__(self, upstream: aiohttp.ClientResponse, headers: list[tuple[bytes, bytes]],
                 reader: StreamReader | None, on_error: Callable[[Exception], GatewayError],
                 on_done: Callable[[StreamResult], None], strip_usage: bool = False,
                 settle: Callable[[], Awaitable[None]] | None = None) -> None:
        self.upstream = upstream
        self.headers = headers
        self.reader = reader
        """Reads the SSE events of a call's stream; None: relay raw bytes (pass-through)."""
        self.strip_usage = strip_usage
        self.on_error = on_error
        self.on_done = on_done
        self.settle = settle
        """Awaited once after `on_done`, before the client sees the end (a shared store's writes)."""
        self.result = StreamResult()
        self.finished = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
            if pump not in done:
                self.result.disconnected = True
        finally:
            for task in (pump, watch):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(pump, watch, return_exceptions=True)
            if self.upstream.content.at_eof():
                self.upstream.release()  # finished cleanly: the connection goes back to the pool
            else:
                self.upstream.close()  # unfinished: drop the connection so the engine aborts
            self._done()

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.upstream.status,
                    "headers": self.headers})
        buffer = b""
        try:
            async for chunk in self.upstream.content.iter_any():
                if self.reader is None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    continue
                buffer += chunk
                cut = buffer.rfind(b"\n\n")
                if cut < 0:
                    continue
                out = self._filter(buffer[:cut + 2])
                buffer = buffer[cut + 2:]
                if self.result.ended:  # see below: charge before the client sees [DONE]
                    self._done()
                    await self._settled()
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            tail = buffer
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = self.result.error = self.on_error(exc)
            tail = error.sse_event() if self.reader is not None else b""
        # Charge the call before the client sees the end of the stream ([DONE], or the last byte when an
        # engine sends none), so that a client reading its program right after already sees this call.
        self._done()
        await self._settled()
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _settled(self) -> None:
        settle, self.settle = self.settle, None
        if settle is not None:
            await settle()

    def _done(self) -> None:
        if not self.finished:
            self.finished = True
            self.on_done(self.result)

    def _filter(self, block: bytes) -> bytes:
        """Complete events in, events to forward out; records content-event times."""
        assert self.reader is not None
        kept: list[bytes] = []
        now = time.perf_counter()
        result = self.result
        for event in block.split(b"\n\n"):
            if not event:
                continue
            kind = self.reader.event(event)
            if kind is Event.FRAME:
                kept.append(event)
                continue
            if kind is Event.USAGE:
                if not self.strip_usage:
                    kept.append(event)
                continue
            if kind is Event.DONE:
                result.ended = True
            else:
                if not result.events:
                    result.t_first = now
                result.events += 1
                result.t_last = now
            kept.append(event)
        return b"\n\n".join(kept) + b"\n\n" if kept else b""
