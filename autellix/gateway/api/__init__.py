"""Wire formats, one module per API, behind one small interface (autellix.gateway.api.base.WireFormat):
chat completions (`chat`) and text completions (`completions`), which share OpenAI's conventions
(`openai`); the Anthropic Messages API (`messages`); the OpenAI Responses API (`responses`, whose state
the gateway keeps: autellix.gateway.response_store). `wire_formats` lists them: the gateway routes each
one's path and treats its calls like any other."""

from autellix.gateway.api.base import Answer, Event, Prepared, StreamReader, Turn, Usage, WireFormat
from autellix.gateway.api.chat import CHAT
from autellix.gateway.api.completions import COMPLETIONS
from autellix.gateway.api.messages import MESSAGES
from autellix.gateway.api.responses import Responses
from autellix.gateway.response_store import ResponseStore


def wire_formats(store: ResponseStore) -> tuple[WireFormat, ...]:
    """Every API the gateway serves with program context, each at its own `path`; `store` keeps the
    Responses API's answers (one per gateway)."""
    return CHAT, COMPLETIONS, MESSAGES, Responses(store)


__all__ = ["CHAT", "COMPLETIONS", "MESSAGES", "Answer", "Event", "Prepared", "Responses", "StreamReader",
           "Turn", "Usage", "WireFormat", "wire_formats"]
