"""Fixtures for the bench tests: the FAKE upstream served by uvicorn on a loopback port in a thread."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).parent))

from fake_openai import FakeOpenAIUpstream  # noqa: E402

from autellix.bench.prompts import PromptBuilder, load_tokenizer  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """uvicorn in a daemon thread on 127.0.0.1; `url` is its base URL."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "fake upstream did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.fixture(scope="session")
def builder() -> PromptBuilder:
    """Prompts sized with the GPT-2 BPE: always available (shared/data), fast to load."""
    return PromptBuilder(load_tokenizer("gpt2"))


@pytest.fixture
def serve_fake(builder: PromptBuilder) -> Iterator[Callable[..., tuple[FakeOpenAIUpstream, str]]]:
    """serve_fake(**settings) -> (fake, base_url); every server started is stopped after the test."""
    servers: list[_Server] = []

    def start(**settings: Any) -> tuple[FakeOpenAIUpstream, str]:
        fake = FakeOpenAIUpstream(tokenizer=builder.tok, **settings)
        servers.append(_Server(fake.app))
        return fake, servers[-1].url

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{_free_port()}"
