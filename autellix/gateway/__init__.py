"""The Autellix gateway: one OpenAI-compatible endpoint in front of many vLLM engines.

Module map (one concept each): config (settings), identity (which program a call belongs to), auth (API
keys, ownership), sessions (process table, accounting, expiry), engines (pool, health, step times),
proxy (forwarding calls), streaming (SSE relay), metrics (Prometheus), app (routes), serve (`autellix
serve`: engines + gateway), supervisor (engine processes).
"""

from autellix.gateway.app import Gateway, create_app
from autellix.gateway.config import GatewayConfig

__all__ = ["Gateway", "GatewayConfig", "create_app"]
