"""Faults: client disconnects cancel engine work; engine death -> 502 naming it, re-pin, rejoin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fake_engine import FakeEngine, ServerThread, free_port
from gateway_harness import Harness, MakeHarness, chat

from autellix.gateway import Gateway, GatewayConfig, create_app

FAKE = Path(__file__).with_name("fake_engine.py")


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_client_disconnect_mid_stream_cancels_engine_request(make_harness: MakeHarness) -> None:
    h: Harness = make_harness(token_delay=0.05)
    with h.client.stream("POST", "/v1/chat/completions", headers={"X-Program-ID": "p"},
                         json=chat(stream=True, max_tokens=200)) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 6:
                break
    eventually(lambda: sum(f.cancelled for f in h.fakes) == 1)
    eventually(lambda: h.state.pool.upstreams[0].load.active == 0)
    info = h.client.get("/v1/programs/p").json()
    assert info["active_calls"] == [] and 0 < info["service"] < 200  # charged what was streamed
    assert sum(f.completed for f in h.fakes) == 0


def test_client_disconnect_while_waiting_cancels_engine_request(make_harness: MakeHarness) -> None:
    h: Harness = make_harness(token_delay=0.05)
    with pytest.raises(httpx.ReadTimeout):
        h.client.post("/v1/chat/completions", json=chat(max_tokens=60), timeout=0.4)
    eventually(lambda: sum(f.cancelled for f in h.fakes) == 1)
    eventually(lambda: sum(e.load.active for e in h.state.pool.upstreams) == 0)
    assert not any(p.calls for p in h.state.sessions.table.programs.values())  # no call leaked


def test_refused_connection_is_retried_on_another_engine(make_harness: MakeHarness) -> None:
    h: Harness = make_harness(health_interval=60.0)  # the health loop will not notice in time
    h.servers[0].stop()
    r = h.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200 and r.headers["x-autellix-engine"] == "engine-1"
    assert h.state.pool.upstreams[0].load.healthy is False


def test_no_healthy_engine_is_503(make_harness: MakeHarness) -> None:
    h: Harness = make_harness()
    for s in h.servers:
        s.stop()
    eventually(lambda: h.state.pool.healthy_count == 0)
    r = h.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 503
    assert h.client.get("/health").status_code == 503


class Subprocess:
    """A FakeEngine in its own process, so that the test can kill it like a crashed engine."""

    def __init__(self, port: int, token_delay: float) -> None:
        self.port, self.token_delay = port, token_delay
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(FAKE), "--port", str(self.port),
                                      "--token-delay", str(self.token_delay), "--name", "sub"])
        eventually(self._up, timeout=20)

    def _up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def dying() -> Iterator[tuple[Subprocess, FakeEngine, httpx.Client, Gateway]]:
    sub = Subprocess(free_port(), token_delay=0.2)
    sub.start()
    good = FakeEngine("good")
    good_server = ServerThread(good.app).start()
    # engine-0 is the killable one: ties in least_used go to index 0, so programs pin there first.
    app = create_app(GatewayConfig(engines=(f"http://127.0.0.1:{sub.port}", good_server.url),
                                   long_prompt=10, health_interval=0.2))
    gateway = ServerThread(app).start()
    client = httpx.Client(base_url=gateway.url, trust_env=False, timeout=30)
    yield sub, good, client, app.state.gateway
    client.close()
    gateway.stop()
    good_server.stop()
    if sub.proc and sub.proc.poll() is None:
        sub.kill()


def test_engine_death_mid_run(dying: tuple[Subprocess, FakeEngine, httpx.Client, Gateway]) -> None:
    sub, good, client, gw = dying
    long_prompt = "word " * 100  # ~125 estimated tokens > long_prompt=10: pinned calls
    calls: dict[str, httpx.Response] = {}
    streams: dict[str, bytes] = {}

    def in_flight() -> None:
        calls["call"] = client.post("/v1/completions", headers={"X-Program-ID": "long"},
                                      json={"prompt": long_prompt, "max_tokens": 50})

    def in_flight_stream() -> None:
        with client.stream("POST", "/v1/completions", headers={"X-Program-ID": "long", "X-Thread-ID": "t2"},
                           json={"prompt": long_prompt, "max_tokens": 50, "stream": True}) as r:
            streams["stream"] = r.read()

    workers = [threading.Thread(target=in_flight), threading.Thread(target=in_flight_stream)]
    for w in workers:
        w.start()
    eventually(lambda: gw.pool.upstreams[0].load.active == 2)
    time.sleep(0.5)  # both calls are mid-generation on engine-0
    sub.kill()
    for w in workers:
        w.join(timeout=10)

    failed = calls["call"]
    assert failed.status_code == 502
    assert failed.json()["error"]["engine"] == "engine-0"
    assert "engine-0" in failed.json()["error"]["message"]
    stream = streams["stream"].decode()
    assert stream.startswith("data: ") and '"engine": "engine-0"' in stream and '"code": 502' in stream

    # Short calls keep flowing (to the survivor); the pinned program is re-pinned.
    for _ in range(3):
        r = client.post("/v1/chat/completions", json=chat())
        assert r.status_code == 200 and r.headers["x-autellix-engine"] == "engine-1"
    again = client.post("/v1/completions", headers={"X-Program-ID": "long"},
                        json={"prompt": long_prompt, "max_tokens": 3})
    assert again.status_code == 200 and again.headers["x-autellix-engine"] == "engine-1"
    assert client.get("/v1/programs/long").json()["engine"] == "engine-1"
    assert client.get("/health").json()["healthy"] == 1
    assert sum(e.load.active for e in gw.pool.upstreams) == 0

    # The restarted engine rejoins: healthy again and receiving calls.
    sub.start()
    eventually(lambda: client.get("/health").json()["healthy"] == 2)
    r = client.post("/v1/chat/completions", json=chat(max_tokens=1))
    assert r.status_code == 200 and r.headers["x-autellix-engine"] == "engine-0"
