"""Shared helpers of the gateway unit tests: a gateway in front of FakeEngines (fake_engine.py), each
served by uvicorn on a loopback port in a background thread. (A uniquely named module rather than
conftest, so that test modules can import it whatever other conftest.py files pytest has loaded.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fake_engine import FakeEngine, ServerThread

from autellix.gateway import Gateway, GatewayConfig, create_app


class Harness:
    """FakeEngines behind one gateway; `client` talks to the gateway."""

    def __init__(self, fakes: list[FakeEngine], servers: list[ServerThread], gateway: ServerThread) -> None:
        self.fakes = fakes
        self.servers = servers
        self.gateway = gateway
        self.state: Gateway = gateway.app.state.gateway
        self.client = httpx.Client(base_url=gateway.url, trust_env=False, timeout=30)

    def requests(self) -> list[dict[str, Any]]:
        return [r for f in self.fakes for r in f.requests]

    def close(self) -> None:
        self.client.close()
        servers = [self.gateway, *self.servers]
        for s in servers:  # signal all first, then join: shutdowns overlap
            s.server.should_exit = True
        for s in servers:
            s.stop()


MakeHarness = Callable[..., Harness]


def build_harness(n: int = 2, token_delay: float = 0.0, cached: int = 0, linger: float = 0.0,
                  kv_blocks: int | None = None, **config: Any) -> Harness:
    fakes = [FakeEngine(f"fake-{i}", token_delay=token_delay, cached=cached, linger=linger,
                        kv_blocks=kv_blocks) for i in range(n)]
    servers = [ServerThread(f.app).start() for f in fakes]
    config.setdefault("health_interval", 0.2)
    app = create_app(GatewayConfig(engines=tuple(s.url for s in servers), **config))
    return Harness(fakes, servers, ServerThread(app).start())


def chat(content: str = "hello", max_tokens: int = 5, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            **extra}
