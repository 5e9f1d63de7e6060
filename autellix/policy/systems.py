"""Every named scheduling system, in one table: which policy-core order it runs and which KV features an
engine carries out for it. The simulator (`autellix sim --policy`), the plugin (`AUTELLIX_POLICY`),
`autellix engine` / `autellix serve --policy` and the benchmarks all read this table (docs/policy.md,
"Systems"). Pure Python.

Names mean one thing everywhere:
- `vllm` is stock vLLM: on a real engine vLLM's own scheduler (no plugin); the simulator models it as FCFS
  with prefix caching and plain LRU eviction (the paper's vLLM-opt).
- `fcfs`, `mlfq`, `plas`, `atlas`, `autellix`, `srpt`, `pfcfs` are policy-core orders (policy/POLICIES).
  Inside vLLM they run as the plugin; in the simulator on the modelled engine, so the simulator's `fcfs`
  behaves as `vllm`.
- `continuum` (Li et al., arXiv 2511.02230) and `thunderagent` (Kang et al., arXiv 2602.13692) are the
  peers' published rules (docs/simulator.md, "KV residency").

Invariants: every `order` is a key of POLICIES; a system with `plugin` runs its order inside vLLM;
`stock` systems run no plugin on real engines; a `pause_gate` system on real engines is stock vLLM behind
the gateway's pause gate (`autellix serve` only: an engine alone cannot run it).
"""

from __future__ import annotations

from dataclasses import dataclass

from autellix.policy import POLICIES, ConfigError

RESIDENCY_MODES = ("", "autellix", "continuum")


@dataclass(frozen=True, slots=True)
class System:
    name: str
    order: str
    """The policy-core order (a key of POLICIES) that ranks calls."""
    prefix_caching: bool = True
    residency: str = ""
    """"autellix": soft holds, eviction bias and admission (policy/residency.py; on while PolicyConfig's
    `residency` knob is); "continuum": hard TTL pins; "": none (vLLM's plain LRU)."""
    pause_gate: bool = False
    """ThunderAgent's proxy pauses and resumes whole programs in front of the engines
    (policy/pause_gate.py): applied by the gateway (gateway/pausing.py) and the simulator's cluster."""
    plugin: bool = False
    """Runs inside vLLM as the Autellix scheduler plugin (real engines)."""
    stock: bool = False
    """vLLM's own scheduler on real engines (no plugin)."""

    @property
    def engine(self) -> str:
        """The system each real engine runs: `vllm` for a stock system (whatever the gateway adds in
        front), else this one (the plugin)."""
        return "vllm" if self.stock else self.name

    def __post_init__(self) -> None:
        if self.order not in POLICIES:
            raise ValueError(f"system {self.name}: unknown order {self.order!r}")
        if self.residency not in RESIDENCY_MODES:
            raise ValueError(f"system {self.name}: unknown residency {self.residency!r}")


def _plugin(name: str, residency: str = "") -> System:
    return System(name, name, residency=residency, plugin=True)


SYSTEMS: dict[str, System] = {s.name: s for s in (
    System("vllm", "fcfs", stock=True),
    _plugin("fcfs"),
    System("fcfs-nocache", "fcfs", prefix_caching=False),
    System("pfcfs", "pfcfs"),
    _plugin("mlfq"),
    _plugin("plas", "autellix"),
    _plugin("atlas", "autellix"),
    _plugin("autellix", "autellix"),
    System("autellix-lru", "autellix"),
    System("srpt", "srpt"),
    System("continuum", "pfcfs", residency="continuum", plugin=True),
    System("thunderagent", "fcfs", pause_gate=True, stock=True),
)}
"""Every system by name (module docstring)."""
PLUGIN_SYSTEMS: tuple[str, ...] = tuple(n for n, s in SYSTEMS.items() if s.plugin)
"""What the plugin runs (AUTELLIX_POLICY)."""
ENGINE_SYSTEMS: tuple[str, ...] = tuple(n for n, s in SYSTEMS.items()
                                       if s.plugin or (s.stock and not s.pause_gate))
"""What a real engine runs by itself (`autellix engine --policy`)."""
SERVE_SYSTEMS: tuple[str, ...] = tuple(n for n, s in SYSTEMS.items() if s.plugin or s.stock)
"""What `autellix serve --policy` runs: the engine systems and those the gateway carries out in front of
stock engines (`pause_gate`)."""


def system(name: str) -> System:
    """The system called `name`; an unknown name raises ConfigError listing the valid ones."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ConfigError(f"policy: unknown {name!r}; choose one of {sorted(SYSTEMS)}") from None
