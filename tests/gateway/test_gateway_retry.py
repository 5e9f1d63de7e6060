"""Idempotent requests survive an engine that drops the connection after the request was sent (an
engine dying mid-request): `GET /v1/models` is retried on a healthy engine; a call (POST) is not (it
may have run), and answers 502 naming the engine.

The dying engine is FAKE: a raw socket server on loopback that answers /health and resets (RST) every
other request once it has read it, so the gateway's request has left when the connection drops.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import httpx
import pytest
from fake_engine import FakeEngine, ServerThread

from autellix.gateway import GatewayConfig, create_app


class ResettingEngine:
    """FAKE engine: /health answers 200; anything else is read, then the connection is reset."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.reset: list[str] = []
        """Request lines of the requests reset after they arrived."""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                if line.startswith("GET /health "):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    continue
                self.reset.append(line)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return  # closed with linger 0: an RST

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def gateway() -> Iterator[tuple[httpx.Client, ResettingEngine]]:
    dying = ResettingEngine()
    healthy = ServerThread(FakeEngine("fake-1").app).start()
    # The health loop will not notice in time: each request finds engine-0 healthy again (re-probed).
    config = GatewayConfig(engines=(dying.url, healthy.url), health_interval=60.0)
    gw = ServerThread(create_app(config)).start()
    client = httpx.Client(base_url=gw.url, trust_env=False, timeout=30)
    try:
        yield client, dying
    finally:
        client.close()
        gw.stop()
        healthy.stop()
        dying.close()


def test_an_idempotent_read_is_retried_after_a_reset_in_flight(gateway: tuple[httpx.Client, ResettingEngine]
                                                                 ) -> None:
    client, dying = gateway
    r = client.get("/v1/models")
    # engine-0 (lowest index, idle) got it first (aiohttp itself resends once on a reused connection)
    assert dying.reset and set(dying.reset) == {"GET /v1/models HTTP/1.1"}
    assert r.status_code == 200 and r.headers["x-autellix-engine"] == "engine-1"
    assert r.json()["data"][0]["id"] == "fake-model"
    health = client.get("/health").json()["engines"]
    assert [e["healthy"] for e in health] == [False, True]  # the dropped engine is out until probed


def test_a_call_reset_in_flight_is_not_resent(gateway: tuple[httpx.Client, ResettingEngine]) -> None:
    client, dying = gateway
    r = client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 2,
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert dying.reset == ["POST /v1/chat/completions HTTP/1.1"]  # sent once, never resent
    assert r.status_code == 502 and r.json()["error"]["engine"] == "engine-0"
