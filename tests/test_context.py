"""The vllm_xargs wire format and the engine plugin's configuration path (pure Python, no vLLM)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.context import MAX_ID, parse_context, to_xargs
from autellix.engine.config import resolve_config
from autellix.policy import ConfigError


def test_non_object_extra_args_are_reported():
    # vLLM's API only lets an object through; the parser copes with anything regardless.
    for junk in ("text", ["autellix_program", "p"], 7):
        c, problems = parse_context(junk)
        assert c.program is None and [k for k, _ in problems] == ["extra_args"]


def test_valid_context_is_read_intact():
    c, problems = parse_context({"autellix_program": "p1", "autellix_thread": 3, "autellix_service": "12.5",
                                 "autellix_wait": 4, "kv_transfer_params": None})
    assert problems == []
    assert (c.program, c.thread, c.service, c.wait) == ("p1", "3", 12.5, 4.0)


ids = st.text(min_size=1, max_size=MAX_ID)
amounts = st.none() | st.floats(min_value=0, max_value=1e12)


@given(ids, ids, amounts, amounts, st.none() | st.booleans())
def test_what_the_gateway_writes_the_engine_reads(program, thread, service, wait, batch):
    xargs = to_xargs(program, thread, service, wait, batch)
    c, problems = parse_context(xargs)
    assert problems == []
    assert (c.program, c.thread, c.service, c.wait, c.batch) == (program, thread, service, wait, batch)
    assert ("autellix_class" in xargs) == (batch is not None)  # a call that names no class sends none


def test_class_names_on_the_wire():
    assert to_xargs("p", batch=True)["autellix_class"] == "batch"
    assert to_xargs("p", batch=False)["autellix_class"] == "interactive"
    assert parse_context({"autellix_program": "p"})[0].batch is None


@pytest.mark.parametrize("value", ["Batch", "", "low", 1, True, 2.5, ["batch"], {"class": "batch"}])
def test_invalid_class_drops_the_context(value):
    c, problems = parse_context({"autellix_program": "p", "autellix_thread": "t", "autellix_class": value})
    assert c.program is None and c.batch is None
    assert [k for k, _ in problems] == ["invalid:autellix_class"]


def test_class_without_program_runs_anonymous():
    c, problems = parse_context({"autellix_class": "batch"})
    assert c.program is None and c.batch is None and [k for k, _ in problems] == ["no-program"]


def test_configuration_path():
    env = {"AUTELLIX_POLICY": "plas", "AUTELLIX_BETA": "4", "AUTELLIX_MAX_PREEMPTIONS": "3"}
    name, config, _ = resolve_config({}, env)
    assert (name, config.beta, config.max_preemptions) == ("plas", 4.0, 3)
    name, config, _ = resolve_config({"autellix": {"policy": "atlas", "beta": 2}}, env)
    assert (name, config.beta, config.max_preemptions) == ("atlas", 2.0, 3)
    assert resolve_config(None, {}).policy == "autellix" and not resolve_config(None, {}).trace
    assert resolve_config(None, {"AUTELLIX_TRACE": "1"}).trace
    assert not resolve_config({"autellix": {"trace": False}}, {"AUTELLIX_TRACE": "yes"}).trace
    for bad in ({"autellix": {"policy": "srpt"}}, {"autellix": {"bogus": 1}}, {"autellix": {"beta": -1}},
                {"autellix": "plas"}, {"autellix": {"trace": "maybe"}}):
        with pytest.raises(ConfigError):
            resolve_config(bad, {})


def test_program_end_notice_round_trips():
    from autellix.context import end_notice, parse_context

    body = end_notice("agent-7")
    ctx, problems = parse_context(body["vllm_xargs"])
    assert ctx.program == "agent-7" and ctx.end and problems == [] and body["max_tokens"] == 1
    assert not parse_context({"autellix_program": "p"})[0].end
