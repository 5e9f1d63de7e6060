"""The gateway's pause gate (autellix.gateway.pausing) without a server: calls from a process table,
clients as disconnect events; and the KV capacity read from vLLM's /metrics text."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from autellix.gateway.api import Usage
from autellix.gateway.errors import GatewayError
from autellix.gateway.pausing import Pausing
from autellix.gateway.upstreams import kv_capacity
from autellix.policy.config import PolicyConfig
from autellix.programs import Call


class Client:
    """An ASGI `receive` whose client disconnects when told to."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def gate_state(p: Pausing) -> tuple[Any, ...]:
    g = p.gate
    return ({pid: (q.tokens, q.active, q.running) for pid, q in g.programs.items()}, g.usage,
            {pid: len(w) for pid, w in p.waiting.items()}, set(p.fresh), set(p.programs))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_new_programs_withdrawn_call_leaves_no_trace_and_a_paused_one_stays_paused() -> None:
    async def run() -> None:
        table = PolicyConfig().new_table()
        p = Pausing(0.9, lambda: 100)  # limit 90
        a = table.new_call("a", prompt_tokens=60)
        assert await p.enter(a, Client().receive)  # alone: let in
        before = gate_state(p)
        b, client = table.new_call("b", prompt_tokens=40), Client()
        waiting = asyncio.ensure_future(p.enter(b, client.receive))
        await settle()
        assert not waiting.done() and p.waiting["b"] and "b" in p.gate.programs
        client.gone.set()
        with pytest.raises(GatewayError) as exc:
            await waiting
        assert exc.value.status == 499 and gate_state(p) == before
        # A paused program's waiting call withdrawn: still paused, with the context it had.
        p.leave(a, Usage(prompt_tokens=60, completion_tokens=40))  # 100 > 90: a is paused
        assert not p.gate.active("a") and p.gate.pauses == 1
        c = table.new_call("c", prompt_tokens=85)
        assert await p.enter(c, Client().receive)  # a's room went to c at once
        paused = gate_state(p)
        a2, client = table.new_call("a", prompt_tokens=100), Client()
        waiting = asyncio.ensure_future(p.enter(a2, client.receive))
        await settle()
        client.gone.set()
        with pytest.raises(GatewayError):
            await waiting
        assert gate_state(p) == paused and p.gate.programs["a"].tokens == 100

    asyncio.run(run())


def test_resumes_smallest_context_first_and_ending_releases_waiting_calls_uncounted() -> None:
    async def run() -> None:
        table = PolicyConfig().new_table()
        p = Pausing(0.9, lambda: 100)
        a = table.new_call("a", prompt_tokens=80)
        assert await p.enter(a, Client().receive)
        big = asyncio.ensure_future(p.enter(table.new_call("big", prompt_tokens=70), Client().receive))
        small_call = table.new_call("small", prompt_tokens=30)
        small = asyncio.ensure_future(p.enter(small_call, Client().receive))
        await settle()
        assert not big.done() and not small.done()
        p.end(table.get("a"))  # room for one of them: the smaller, though it came later
        await settle()
        assert small.result() is True and not big.done()
        p.leave(small_call, Usage(prompt_tokens=30, completion_tokens=5))  # 35 + 70 > 90: still one
        await settle()
        assert not big.done() and p.gate.active("small")
        p.end(table.get("small"))
        await settle()
        assert big.result() is True
        late = asyncio.ensure_future(p.enter(table.new_call("late", prompt_tokens=30), Client().receive))
        await settle()
        assert not late.done()  # 70 + 30 > 90
        p.end(table.get("late"))  # a program ending with its call waiting: the call goes, uncounted
        await settle()
        assert late.result() is False and "late" not in p.gate.programs and not p.waiting


def test_anonymous_calls_pass_uncounted_and_an_unknown_capacity_holds_nothing() -> None:
    async def run() -> None:
        table = PolicyConfig().new_table()
        capacity: list[int | None] = [None]
        p = Pausing(0.9, lambda: capacity[0])
        assert await p.enter(table.new_call(None, prompt_tokens=10**6), Client().receive) is False
        assert not p.gate.programs
        for i in range(3):  # capacity unknown: every program is let in
            assert await p.enter(table.new_call(f"p{i}", prompt_tokens=1000), Client().receive)
        assert p.gate.limit == math.inf and p.gate.usage == 3000
        capacity[0] = 100
        w = asyncio.ensure_future(p.enter(table.new_call("w", prompt_tokens=10), Client().receive))
        await settle()
        assert not w.done()  # learned: 3000 > 90, and p0..p2 are running, so none can be paused
        for i in range(3):
            call: Call = next(iter(table.get(f"p{i}").calls.values()))
            p.leave(call, Usage(prompt_tokens=1000, completion_tokens=0))
        await settle()
        assert w.result() is True and [q for q in p.gate.programs if p.gate.active(q)] == ["w"]

    asyncio.run(run())


METRICS = b"""# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",kv_cache_dtype_skip_layers="[]",num_gpu_blocks="2048"} 1.0
vllm:cache_config_info{block_size="16",engine="1",kv_cache_dtype_skip_layers="[]",num_gpu_blocks="2048"} 1.0
vllm:num_preemptions_total{engine="0",model_name="m"} 0.0
"""


def test_kv_capacity_is_blocks_times_block_size_of_vllms_cache_config_info() -> None:
    assert kv_capacity(METRICS) == 2048 * 16  # engine cores of one endpoint report the same total
    assert kv_capacity(b'vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0\n') is None
    assert kv_capacity(b'vllm:num_preemptions_total{model_name="m"} 0.0\n') is None


def test_the_pause_gate_is_on_only_for_its_system_and_needs_a_way_to_learn_the_capacity() -> None:
    from autellix.gateway import GatewayConfig

    url = ("http://127.0.0.1:1",)
    assert GatewayConfig(url, system="thunderagent").pause_gate
    assert not any(GatewayConfig(url, system=s).pause_gate for s in ("vllm", "autellix", "continuum"))
    with pytest.raises(ValueError, match="kv_capacity_tokens"):
        GatewayConfig(url, system="thunderagent", metrics_interval=0)
    assert GatewayConfig(url, system="thunderagent", metrics_interval=0, kv_capacity_tokens=64).pause_gate
    with pytest.raises(ValueError, match="unknown 'fifo'"):
        GatewayConfig(url, system="fifo")
