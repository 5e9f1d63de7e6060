"""The Autellix gateway: one OpenAI-compatible endpoint in front of many vLLM engines.

Module map (one concept each), in the order a call meets them: app (routes), auth (API keys,
ownership), bodies (request bodies), api (one wire format per API: chat and text completions),
identity (which program a call belongs to: named, or inferred by conversations), sessions (process
table, accounting, expiry), pausing (ThunderAgent's pause gate, `--policy thunderagent`), flight
(one call's accounting), upstreams (the engines as the gateway sees them: pool, health, step times, KV
capacity), forward (sending, with the one pick-and-retry loop), streaming (SSE relay), metrics
(Prometheus); config (settings) and errors (OpenAI-shaped errors). Starting engines and serving the
gateway (`autellix serve`) is deployment: autellix.deploy, which imports the gateway, never the other
way round.
"""

from autellix.gateway.app import Gateway, create_app
from autellix.gateway.config import GatewayConfig

__all__ = ["Gateway", "GatewayConfig", "create_app"]
