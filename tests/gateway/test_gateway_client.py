"""autellix.client.Program over the official openai SDK (sync and async), through the gateway."""

from __future__ import annotations

import asyncio

import openai
import pytest
from gateway_harness import Harness, MakeHarness

from autellix.client import Program
from autellix.policy.config import PolicyConfig

MSG = [{"role": "user", "content": "hi"}]


def sdk(h: Harness) -> openai.OpenAI:
    return openai.OpenAI(base_url=h.gateway.url + "/v1", api_key="none", max_retries=0)


def test_sync_program_tags_calls_and_ends(harness: Harness) -> None:
    client = sdk(harness)
    with Program(client) as p:
        p.chat.completions.create(model="m", messages=MSG, max_tokens=2)
        t = p.thread()
        chunks = list(t.chat.completions.create(model="m", messages=MSG, max_tokens=3, stream=True))
        assert len(chunks) == 3
        p.completions.create(model="m", prompt="x", max_tokens=1, extra_headers=p.headers)
        info = p.status()
        assert info["completed_calls"] == 3 and info["threads"] == ["0", "1"]
    # the program's calls (the engines' program-end notices, sent as it ends, may be among them already)
    xargs = [r["vllm_xargs"] for r in harness.requests() if not r["vllm_xargs"].get("autellix_end")]
    assert {x["autellix_program"] for x in xargs} == {p.id}
    assert [x["autellix_thread"] for x in xargs] == ["0", "1", "0"]
    assert len(harness.state.sessions) == 0
    with pytest.raises(openai.NotFoundError):
        p.status()


def test_program_ends_on_exception(harness: Harness) -> None:
    with pytest.raises(RuntimeError):
        with Program(sdk(harness), program_id="doomed"):
            raise RuntimeError("agent crashed")
    assert len(harness.state.sessions) == 0


@pytest.mark.parametrize("rule, service", [("total", 16), ("critical_path", 4)])
def test_async_program_parallel_threads(make_harness: MakeHarness, rule: str, service: int) -> None:
    # calls overlap: truly parallel
    harness: Harness = make_harness(token_delay=0.05, policy=PolicyConfig(service_rule=rule))

    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=harness.gateway.url + "/v1", api_key="none", max_retries=0)
        async with Program(client) as p:
            threads = [p.thread(f"branch-{i}") for i in range(4)]
            await asyncio.gather(*(t.chat.completions.create(model="m", messages=MSG, max_tokens=4)
                                   for t in threads))
            info = await p.astatus()
            assert info["service"] == service  # four 4-token threads: their sum, or one path
            return info["threads"]

    assert asyncio.run(run()) == [f"branch-{i}" for i in range(4)]
    assert len(harness.state.sessions) == 0


def test_sync_program_rejects_async_client(harness: Harness) -> None:
    client = openai.AsyncOpenAI(base_url=harness.gateway.url + "/v1", api_key="none")
    with pytest.raises(TypeError):
        Program(client).open()
