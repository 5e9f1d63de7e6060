"""Wire formats, one module per API, behind one small interface (autellix.gateway.api.base.WireFormat):
chat completions (`chat`) and text completions (`completions`), which share OpenAI's conventions
(`openai`). A new API (the Anthropic Messages API, the OpenAI Responses API) is a sibling module with a
WireFormat of its own, listed in WIRE_FORMATS: the gateway routes its path and treats its calls like
any other."""

from autellix.gateway.api.base import Answer, Event, Prepared, StreamReader, Usage, WireFormat
from autellix.gateway.api.chat import CHAT
from autellix.gateway.api.completions import COMPLETIONS

WIRE_FORMATS: tuple[WireFormat, ...] = (CHAT, COMPLETIONS)
"""Every API the gateway serves with program context, each at its own `path`."""

__all__ = ["CHAT", "COMPLETIONS", "WIRE_FORMATS", "Answer", "Event", "Prepared", "StreamReader", "Usage",
           "WireFormat"]
