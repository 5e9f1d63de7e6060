"""SweepSpec: what one `autellix sim --workload` sweep simulates, and what it derives from that.

A sweep runs every policy at every point, open loop (arrival rates) or closed loop (concurrency): the
workload drawn once per point (seeded: the same programs for every policy), on engines described by the
spec's hardware, model, calibration and EngineConfig. `describe` is the JSON's `config` section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from autellix import workloads
from autellix.balance import BALANCERS
from autellix.policy import PolicyConfig
from autellix.policy.systems import system
from autellix.report import DEFAULT_MULTIPLES
from autellix.sim import hardware as hw
from autellix.sim.config import EngineConfig
from autellix.sim.cost import CostModel, load_cost_model
from autellix.workloads import WORKLOADS, ProgramSpec, generate, program_counts


@dataclass(frozen=True)
class SweepSpec:
    """One sweep. Invariants (checked by `validate`): a known workload, >= 1 known policy, >= 1 positive
    rate, programs one count >= 1 or one per rate, engines >= 1, a known balancer."""

    workload: str
    policies: tuple[str, ...]
    rates: tuple[float, ...]
    programs: int | tuple[int, ...] = 1000
    engines: int = 1
    balancer: str = "locality"
    hardware: str = "h200"
    model: str = "llama3.1-8b"
    calibration: str | None = None
    seed: int = 0
    scale: float = 1.0
    config: EngineConfig = field(default_factory=EngineConfig)
    policy_config: PolicyConfig = field(default_factory=PolicyConfig)
    interactive: str | None = None
    """Closed loop only: the workload of an interactive stream beside the fleet, which is then batch
    (docs/simulator.md, "Interactive and batch")."""
    interactive_rate: float = 0.1
    """The interactive stream's program arrival rate (programs/s)."""
    interactive_programs: int = 200
    """Interactive programs per point (the point ends when the last completes)."""
    baselines: tuple[str, ...] = ("fcfs", "fcfs-nocache")
    multiples: tuple[float, ...] = DEFAULT_MULTIPLES

    def validate(self, need_rates: bool = True) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; choose one of {sorted(WORKLOADS)}")
        if not self.policies:
            raise ValueError("--policy: need at least one policy")
        for p in self.policies:
            system(p)
        if need_rates and not self.rates:
            raise ValueError("--rates: need at least one arrival rate (programs/s), e.g. --rates 1,2,4")
        if any(not r > 0 for r in self.rates):
            raise ValueError(f"--rates: every rate must be > 0, got {list(self.rates)}")
        program_counts(self.programs, len(self.rates) if need_rates else 1)
        if self.engines < 1:
            raise ValueError(f"--engines: must be >= 1, got {self.engines}")
        if self.balancer not in BALANCERS:
            raise ValueError(f"--balancer: unknown {self.balancer!r}; choose one of {sorted(BALANCERS)}")
        if not self.scale > 0:
            raise ValueError(f"--scale: must be > 0, got {self.scale}")
        if self.interactive is not None:
            if self.interactive not in WORKLOADS:
                raise ValueError(f"--interactive: unknown workload {self.interactive!r}; choose one of "
                                 f"{sorted(WORKLOADS)}")
            if need_rates:
                raise ValueError("--interactive: needs a closed-loop fleet (--concurrency), not --rates")
            if not self.interactive_rate > 0 or self.interactive_programs < 1:
                raise ValueError(f"--interactive-rate must be > 0 and --interactive-programs >= 1, got "
                                 f"{self.interactive_rate}, {self.interactive_programs}")


def cost_model(spec: SweepSpec) -> tuple[CostModel, int]:
    """The fitted cost model and the swap pool size in blocks (swap_space_GB of host memory)."""
    cost = load_cost_model(spec.hardware, spec.model, path=spec.calibration)
    if spec.calibration:
        profile = hw.read_profile(spec.calibration)
        key = hw.MODELS[spec.model].profile_key if spec.model in hw.MODELS else spec.model
    else:
        profile = hw.read_profile(hw.find_calibration_file(hw.gpu_preset(spec.hardware).profile_file))
        key = hw.model_preset(spec.model).profile_key
    per_block = float(profile[key]["kv_bytes_per_token"]) * cost.block_tokens
    return cost, int(spec.config.swap_space_GB * 1e9 // per_block)

def interactive_stream(spec: SweepSpec) -> tuple[ProgramSpec, ...]:
    """The interactive programs of a mixed point (workloads.interactive_stream)."""
    assert spec.interactive is not None
    return tuple(workloads.interactive_stream(spec.interactive, spec.interactive_programs,
                                              spec.interactive_rate, spec.seed, spec.scale))


@lru_cache(maxsize=2)
def draw_programs(workload: str, n: int, draw: int, rate: float, seed: int,
                  scale: float) -> tuple[ProgramSpec, ...]:
    """The first `n` of one seeded draw of `draw` programs at `rate` (workloads.generate), cached: every
    policy of a point runs the same programs."""
    return tuple(generate(workload, n, rate, seed, scale, draw=draw))


def describe(spec: SweepSpec, cost: CostModel) -> dict[str, Any]:
    """The JSON's `config`: the spec as given plus what the cost model makes of it."""
    d = dataclasses.asdict(spec)
    d["config"] = dataclasses.asdict(spec.config)
    d["policy_config"] = {k: v for k, v in dataclasses.asdict(spec.policy_config).items() if k != "extra"}
    d["cost_model"] = cost.name
    d["kv_capacity_tokens"] = spec.config.gpu_blocks * cost.block_tokens if spec.config.gpu_blocks \
        else cost.kv_capacity_tokens
    d["block_tokens"] = cost.block_tokens
    d["request_overhead_s"] = spec.config.request_overhead(cost)
    return d
