"""ConversationIndex: programs inferred from message histories (pure; no HTTP)."""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.gateway.api import CHAT
from autellix.gateway.api.chat import ChatReplies
from autellix.gateway.api.completions import TextReplies
from autellix.gateway.conversations import BLOCK, HANDOFF_MIN, ConversationIndex, MalformedMessages

SYSTEM = {"role": "system", "content": "You are a coding agent. Use the tools."}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def say(text: str) -> dict:
    return {"role": "assistant", "content": text}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def turn(index: ConversationIndex, messages: list[dict], reply: dict, owner: str | None = None):
    inference = index.infer_chat(owner, messages)
    index.replied(inference, [reply])
    return inference


def test_a_call_extending_a_reply_joins_its_program_and_thread() -> None:
    index = ConversationIndex(ttl=60)
    history = [SYSTEM, user("fix bug 1")]
    first = turn(index, history, say("ls"))
    assert first.how == "new" and first.program_id.startswith("conv-")
    second = turn(index, [*history, say("ls"), user("a.py b.py")], say("cat a.py"))
    assert (second.program_id, second.thread, second.how) == (first.program_id, "0", "extends")


def test_shared_prefix_or_identical_prompt_never_merges() -> None:
    index = ConversationIndex(ttl=60)
    a = turn(index, [SYSTEM, user("task")], say("plan A"))
    b = turn(index, [SYSTEM, user("task")], say("plan B"))  # same prompt, another run
    assert a.program_id != b.program_id and b.how == "new"
    c = index.infer_chat(None, [SYSTEM, user("task"), say("plan C"), user("go")])  # a reply nobody gave
    assert c.how == "new" and c.program_id not in (a.program_id, b.program_id)
    again = index.infer_chat(None, [SYSTEM, user("task"), say("plan B"), user("go")])
    assert again.program_id == b.program_id


def test_parallel_extensions_are_branch_threads() -> None:
    index = ConversationIndex(ttl=60)
    root = turn(index, [SYSTEM, user("solve")], say("think"))
    base = [SYSTEM, user("solve"), say("think")]
    kids = [index.infer_chat(None, [*base, user(f"option {k}")]) for k in range(3)]
    assert {k.program_id for k in kids} == {root.program_id}
    assert [k.thread for k in kids] == ["0", "0.1", "0.2"]
    assert [k.how for k in kids] == ["extends", "branch", "branch"]


def test_a_failed_call_gives_its_claim_back() -> None:
    index = ConversationIndex(ttl=60)
    turn(index, [SYSTEM, user("q")], say("a"))
    history = [SYSTEM, user("q"), say("a"), user("more")]
    failed = index.infer_chat(None, history)
    index.failed(failed)
    retry = index.infer_chat(None, history)
    assert (retry.program_id, retry.thread, retry.how) == (failed.program_id, "0", "extends")


def test_what_clients_do_to_histories_still_matches() -> None:
    index = ConversationIndex(ttl=60)
    reply = {"role": "assistant", "content": None, "reasoning_content": "hmm",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "search", "arguments": '{"q": "x"}'}}]}
    first = turn(index, [SYSTEM, user("find x")], reply)
    echoed = {"role": "assistant", "content": "",  # reasoning dropped, args re-serialised, name added
              "tool_calls": [{"id": "call_1", "type": "function",
                              "function": {"name": "search", "arguments": '{"q":"x"}'}}], "name": "bot"}
    nxt = index.infer_chat(None, [SYSTEM, {"role": "user", "content": [{"type": "text", "text": "find x"}]},
                                  echoed, {"role": "tool", "tool_call_id": "call_1", "content": "x=1"}])
    assert (nxt.program_id, nxt.how) == (first.program_id, "extends")
    other_call = copy.deepcopy(echoed)
    other_call["tool_calls"][0]["id"] = "call_2"  # another call's id is another reply
    assert index.infer_chat(None, [SYSTEM, user("find x"), other_call]).how == "new"


def test_owners_never_share_programs() -> None:
    index = ConversationIndex(ttl=60)
    turn(index, [SYSTEM, user("q")], say("a"), owner="alice")
    assert index.infer_chat("bob", [SYSTEM, user("q"), say("a"), user("b")]).how == "new"
    assert index.infer_chat("alice", [SYSTEM, user("q"), say("a"), user("b")]).how == "extends"


def test_handoff_links_a_new_conversation_to_the_reply_it_quotes() -> None:
    index = ConversationIndex(ttl=60)
    words = "I'm Yusuf and I would like to change the address of my two pending orders, please."
    assert len(words) >= HANDOFF_MIN
    sim = turn(index, [{"role": "system", "content": "You are a customer."}, user("Hi! How can I help?")],
               say(words))
    agent = index.infer_chat(None, [SYSTEM, user(words)])
    assert (agent.program_id, agent.how, agent.thread) == (sim.program_id, "handoff", "0.h1")
    assert index.infer_chat(None, [SYSTEM, user("Short reply.")]).how == "new"
    other = turn(index, [{"role": "system", "content": "Another customer."}, user("Hi!")], say(words))
    assert other.program_id != sim.program_id
    assert index.infer_chat(None, [SYSTEM, user(words)]).how == "new"  # two programs wrote it: ambiguous


def test_text_prompts_extend_prompt_plus_completion_across_blocks() -> None:
    index = ConversationIndex(ttl=60)
    prompt = "P" * (BLOCK + 100)
    first = index.infer_text(None, prompt)
    index.replied(first, ["C" * (BLOCK - 50)])
    grown = prompt + "C" * (BLOCK - 50) + "\nObservation: ok\n"
    assert index.infer_text(None, grown).program_id == first.program_id
    assert index.infer_text(None, prompt + "D" * BLOCK).how == "new"  # same prompt, other completion
    short = index.infer_text(None, "Q: 1+1?")
    index.replied(short, [" 2"])
    assert index.infer_text(None, "Q: 1+1? 2\nQ: 2+2?").program_id == short.program_id
    assert index.infer_text(None, "Q: 1+1? 3").how == "new"


def test_ttl_and_capacity_bound_memory() -> None:
    clock = Clock()
    index = ConversationIndex(ttl=10, clock=clock, max_keys=4)
    for k in range(6):
        turn(index, [SYSTEM, user(f"q{k}")], say(f"a{k}"))
    assert len(index) == 4
    assert index.infer_chat(None, [SYSTEM, user("q0"), say("a0"), user("x")]).how == "new"  # evicted
    clock.t = 11
    assert index.infer_chat(None, [SYSTEM, user("q5"), say("a5"), user("x")]).how == "new"  # expired
    assert len(index) == 0


@pytest.mark.parametrize("messages", [None, [], "hi", [3], [{"content": "x"}], [{"role": 1}],
                                      [{"role": "user", "content": 5}],
                                      [{"role": "user", "content": [{"text": "no type"}]}],
                                      [{"role": "user", "content": [{"type": "text", "text": 5}]}],
                                      [{"role": "assistant", "tool_calls": "x"}],
                                      [{"role": "assistant", "tool_calls": [{"id": "c"}]}]])
def test_malformed_message_lists_are_rejected_with_the_place(messages: object) -> None:
    with pytest.raises(MalformedMessages, match="messages"):
        ConversationIndex(ttl=60).infer_chat(None, messages)


def test_streamed_replies_are_assembled_like_complete_ones() -> None:
    builder = ChatReplies()
    for chunk in ({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                  {"choices": [{"index": 0, "delta": {"tool_calls": [
                      {"index": 0, "id": "call_9", "function": {"name": "get_", "arguments": ""}}]}}]},
                  {"choices": [{"index": 0, "delta": {"tool_calls": [
                      {"index": 0, "function": {"name": "weather", "arguments": '{"c":1}'}}]}}]},
                  {"choices": [], "usage": {"prompt_tokens": 1}}, None):
        builder.add(chunk)
    streamed = builder.replies()
    complete = CHAT.replies({"choices": [{"index": 0, "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_9", "function": {"name": "get_weather", "arguments": '{"c": 1}'}}]}}]})
    index = ConversationIndex(ttl=60)
    a = index.infer_chat(None, [user("w?")])
    index.replied(a, streamed)
    assert index.infer_chat(None, [user("w?"), complete[0], user("thanks")]).program_id == a.program_id
    text = TextReplies()
    text.add({"choices": [{"index": 0, "text": "Hel"}]})
    text.add({"choices": [{"index": 0, "text": "lo"}]})
    assert text.replies() == ["Hello"]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 6), st.randoms(use_true_random=False))
def test_interleaved_runs_with_one_system_prompt_are_attributed_exactly(
        programs: int, turns: int, rnd: random.Random) -> None:
    """Any interleaving of runs that share a system prompt and even a first task: every call lands in
    its own run's program, and no two runs merge."""
    index = ConversationIndex(ttl=60)
    histories = {p: [SYSTEM, user(f"task {p % 2}")] for p in range(programs)}
    left = {p: turns for p in range(programs)}
    seen: dict[int, str] = {}
    while left:
        p = rnd.choice(sorted(left))
        inference = index.infer_chat(None, histories[p])
        assert seen.setdefault(p, inference.program_id) == inference.program_id
        reply = say(f"step of run {p} #{turns - left[p]}")
        index.replied(inference, [reply])
        histories[p] += [reply, user(f"observation {rnd.randint(0, 3)}")]
        left[p] -= 1
        if not left[p]:
            del left[p]
    assert len(set(seen.values())) == programs
