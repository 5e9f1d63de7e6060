"""Identity rules (first match wins) and body stripping."""

from __future__ import annotations

import pytest

from autellix.gateway.errors import GatewayError
from autellix.gateway.identity import resolve_identity


def test_header_beats_body_and_session() -> None:
    body = {"program_id": "b", "thread_id": "bt", "x": 1}
    ident = resolve_identity({"x-program-id": "h", "x-thread-id": "ht", "x-session-id": "s"}, body)
    assert (ident.program_id, ident.thread_id, ident.source) == ("h", "ht", "header")
    assert body == {"x": 1}  # stripped even though the header won


def test_body_beats_session_and_thread_falls_back_to_body() -> None:
    body = {"program_id": "b", "thread_id": "bt"}
    ident = resolve_identity({"x-session-id": "s"}, body)
    assert (ident.program_id, ident.thread_id, ident.source) == ("b", "bt", "body")
    assert body == {}


def test_session_header_then_anonymous() -> None:
    assert resolve_identity({"x-session-id": "s"}, {}).program_id == "s"
    anon = resolve_identity({}, {})
    assert (anon.program_id, anon.thread_id, anon.source) == (None, "0", "anonymous")


def test_header_thread_with_body_program() -> None:
    ident = resolve_identity({"x-thread-id": "ht"}, {"program_id": "b", "thread_id": "bt"})
    assert (ident.program_id, ident.thread_id) == ("b", "ht")


@pytest.mark.parametrize("body", [{"program_id": 3}, {"program_id": ""}, {"thread_id": ["x"]},
                                  {"program_id": "x" * 300}])
def test_invalid_ids_are_400(body: dict) -> None:
    with pytest.raises(GatewayError) as err:
        resolve_identity({}, body)
    assert err.value.status == 400


@pytest.mark.parametrize("headers, body", [({"x-program-id": ""}, {}), ({"x-program-id": "  "}, {}),
                                           ({}, {"program_id": " \t"}), ({"x-session-id": ""}, {})])
def test_empty_or_blank_ids_are_400_whichever_source(headers: dict, body: dict) -> None:
    with pytest.raises(GatewayError) as err:
        resolve_identity(headers, body)
    assert err.value.status == 400


@pytest.mark.parametrize("headers, source", [({"x-claude-code-session-id": "c1"}, "claude-code"),
                                             ({"x-dynamo-session-id": "c1"}, "dynamo"),
                                             ({"x-smg-routing-key": "c1"}, "smg"),
                                             ({"session_id": "c1"}, "codex")])
def test_harness_session_headers_name_the_program(headers: dict, source: str) -> None:
    ident = resolve_identity(headers, {})
    assert (ident.program_id, ident.source) == ("c1", source)
    assert resolve_identity({**headers, "x-session-id": "s"}, {}).source == "session"  # explicit ids first


def test_prompt_cache_key_is_a_program_id_of_last_resort_and_stays_in_the_body() -> None:
    body = {"prompt_cache_key": "k1", "messages": []}
    ident = resolve_identity({}, body)
    assert (ident.program_id, ident.source) == ("k1", "prompt_cache_key") and body["prompt_cache_key"] == "k1"
    by_harness = resolve_identity({"x-claude-code-session-id": "c"}, {"prompt_cache_key": "k1"})
    assert by_harness.source == "claude-code"
    assert resolve_identity({}, {"prompt_cache_key": "  "}).program_id is None
