"""GatewayConfig: every gateway knob in one frozen object, validated once at construction.

Units follow the policy core (autellix.policy.config): service in decode-token equivalents, wait in
engine steps. Times are seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autellix.balance import BALANCERS
from autellix.policy.config import PolicyConfig
from autellix.policy.systems import system


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Settings of one gateway process.

    Invariants: at least one engine URL unless `dynamic_engines`, each `http(s)://host:port` without a
    trailing slash; a known balancer and system; positive intervals and timeouts; a pause gate has a way
    to learn the KV capacity (`kv_capacity_tokens`, or engine metrics scraped).
    """

    engines: tuple[str, ...]
    """Base URLs of the vLLM engines, e.g. http://127.0.0.1:8001 (index = position)."""
    dynamic_engines: bool = False
    """Engines join and leave at run time (Ray: autellix.deploy.ray_engines); `engines` may be empty."""
    balancer: str = "locality"
    long_prompt: int = 2048
    """Locality balancer: calls with more (estimated) prompt tokens go to the program's pinned engine."""
    api_keys: frozenset[str] = frozenset()
    """Accepted `Authorization: Bearer` keys; empty means no authentication."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Supplies prefill_weight (service), table_ttl (program expiry) and the level boundaries (metrics);
    admit_high is the pause gate's threshold."""
    system: str = "autellix"
    """The named system served (policy/systems.py, `autellix serve --policy`). The gateway acts on it
    only where the system runs there: `pause_gate` (ThunderAgent) turns on autellix.gateway.pausing;
    `stock` engines (no plugin) get a batch program's class as vLLM's `priority` (`class_priority`)."""
    kv_capacity_tokens: int | None = None
    """Pause gate: the engines' total KV cache in tokens; None: the sum of what each engine's /metrics
    reports (autellix.gateway.upstreams.kv_capacity)."""
    chars_per_token: float = 4.0
    """Prompt-size estimate for the balancer before the engine reports usage (BPE: ~4 chars/token)."""
    health_interval: float = 1.0
    health_timeout: float = 2.0
    metrics_interval: float = 5.0
    """How often each engine's /metrics is scraped for its preemption counter (0 disables)."""
    connect_timeout: float = 5.0
    read_timeout: float | None = None
    """Seconds without a byte from the engine before a call fails; None waits as long as the call runs."""
    infer_programs: bool = True
    """Calls that name no program get one inferred from their conversation (autellix.gateway.conversations);
    off: they are anonymous one-call programs."""
    user_programs: bool = False
    """OpenAI's `user` body field names the program (off: one user may run many programs at once)."""
    max_body_bytes: int = 32 << 20
    """Largest request body accepted (413 past it)."""
    model_aliases: tuple[tuple[str, str], ...] = ()
    """(pattern, served model): a call whose `model` matches the pattern (fnmatch: `claude-*`, `*`) is
    sent with the served model instead; first match wins. For clients that send their own model ids."""
    responses_max_bytes: int = 256 << 20
    """Responses API: the most the stored responses may take (autellix.gateway.response_store)."""
    responses_ttl: float = 3600.0
    """Responses API: seconds a stored response is kept after its last use."""
    max_connections: int = 2048
    upstream_keepalive: float = 3.0
    """Seconds an idle engine connection may be reused. Below vLLM's own idle limit (5 s,
    VLLM_HTTP_TIMEOUT_KEEP_ALIVE) so the gateway never sends on a connection the engine is closing:
    such a send would fail like a crash (502) although the engine never saw the call."""

    @property
    def class_priority(self) -> bool:
        """Stock engines: the class travels as vLLM's `priority` (batch 1, else none), which they honour
        when they run `--scheduling-policy priority` (docs/gateway.md, "Classes")."""
        return system(self.system).stock

    @property
    def pause_gate(self) -> bool:
        """Whether calls pass ThunderAgent's pause gate (autellix.gateway.pausing)."""
        return system(self.system).pause_gate

    def __post_init__(self) -> None:
        urls = tuple(u.rstrip("/") for u in self.engines)
        object.__setattr__(self, "engines", urls)
        if not urls and not self.dynamic_engines:
            raise ValueError("engines: need at least one engine URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"engines: {url!r} must start with http:// or https://")
        if self.pause_gate and self.kv_capacity_tokens is None and not self.metrics_interval:
            raise ValueError("kv_capacity_tokens: the pause gate needs it when engine metrics are not "
                             "scraped (metrics_interval 0)")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < 1:
            raise ValueError(f"kv_capacity_tokens: must be >= 1, got {self.kv_capacity_tokens}")
        if self.balancer not in BALANCERS:
            raise ValueError(f"balancer: unknown {self.balancer!r}; choose one of {sorted(BALANCERS)}")
        if self.long_prompt < 0:
            raise ValueError(f"long_prompt: must be >= 0, got {self.long_prompt}")
        for name in ("chars_per_token", "health_interval", "health_timeout", "connect_timeout",
                     "upstream_keepalive", "responses_ttl"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be a positive number, got {value}")
        for pattern, model in self.model_aliases:
            if not pattern or not model:
                raise ValueError(f"model_aliases: need PATTERN=MODEL, got {pattern!r}={model!r}")
        if self.responses_max_bytes < 1 or not self.responses_ttl > 0:
            raise ValueError("responses_max_bytes and responses_ttl: must be positive")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes: must be >= 1, got {self.max_body_bytes}")
        if self.metrics_interval < 0:
            raise ValueError(f"metrics_interval: must be >= 0, got {self.metrics_interval}")
        if self.read_timeout is not None and not self.read_timeout > 0:
            raise ValueError(f"read_timeout: must be > 0 or None, got {self.read_timeout}")
        if any(not k for k in self.api_keys):
            raise ValueError("api_keys: keys must be non-empty strings")
