"""PolicyConfig: every scheduling knob, its default, and its one configuration path.

Units. *Service* is counted in decode-token equivalents: decode tokens plus `prefill_weight` x prompt
tokens actually computed (prefix-cache hits are free). *Wait* is counted in engine steps: one step is one
scheduler iteration, in which a running call gains about one decode token. The starvation ratio
wait / service is therefore dimensionless, like the paper's waiting-time / service-time ratio, and does
not depend on how fast the hardware is.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autellix.programs import SERVICE_RULES, ProcessTable

DEFAULT_BOUNDARIES: tuple[float, ...] = (0, 256, 512, 1024, 2048, 4096, 8192, 16384, math.inf)
LEVEL_ORDERS: tuple[str, ...] = ("call", "program")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Knobs shared by every policy.

    Invariants (checked in `__post_init__`): `boundaries` start at 0, rise strictly and end at infinity,
    so K = len(boundaries) - 1 levels partition [0, inf); `quanta` has K positive entries (the last may be
    infinite) or is None, meaning each level's width; `beta` > 0; `prefill_weight` >= 0;
    `max_preemptions` >= 0; `preempt_gap` >= 1;
    `service_rule` is one of SERVICE_RULES; `level_order` is one of LEVEL_ORDERS.
    """

    boundaries: tuple[float, ...] = DEFAULT_BOUNDARIES
    """Level i holds services in [boundaries[i], boundaries[i+1]). Default K=8, geometric."""
    quanta: tuple[float, ...] | None = None
    """Service a call may receive inside level i before demotion to i+1. None: the level's width."""
    beta: float = 8.0
    """Anti-starvation: promote to level 0 when wait / max(1, service) >= beta."""
    starvation: bool = True
    """Whether anti-starvation promotion is on."""
    prefill_weight: float = 0.25
    """Service charged per computed prompt token, in decode-token units."""
    max_preemptions: int = 2
    """Most running calls one schedule() may preempt (bounds recompute churn)."""
    preempt_gap: int = 3
    """A waiting call displaces a running one only if its level is at least this many levels better
    (level policies; 1: any better level). Default 3 (with the default boundaries: the waiter's program
    has received under about a quarter of the victim's service): measured in docs/policy.md, a preemption
    for a merely better level costs more (swap or recompute, lost batch slot) than the order gains.
    With `preempt_gap` or fewer levels nothing preempts: lower it along with the boundaries."""
    service_rule: str = "total"
    """How a program's attained service adds up its calls (identical for sequential programs). "total":
    every completed call's service is added, i.e. what the program has taken from the engine.
    "critical_path": the longest chain of calls, the paper's ATLAS max rule. (The program's wait always
    follows the critical path: programs.py.) Default "total": measured in
    docs/policy.md, on engines with few seats a parallel program charged only its critical path holds
    several seats at the priority of one thread and delays everyone else; with many seats the rules tie."""
    level_order: str = "call"
    """FCFS inside a level by whose arrival (program-aware policies; FCFS and MLFQ always use the
    call's). "call": each call's own arrival (docs/policy.md, 'Rules', 4): a level's programs interleave
    call by call, i.e. processor sharing among programs of about the same attained service. "program": calls
    of the program that arrived first go first, so a level serves its programs one after another. In
    docs/policy.md ("Order inside a level"), "program" gains 10-37% as-measured throughput on the simulated
    H200 (finite runs past capacity, where the order of the backlog decides mean latency);
    on the real CPU engine it cost 25% of mean latency at 0.9/s one day and 2% another, hence not the
    default until that is understood."""
    adaptive_order: bool = True
    """Program-aware policies, where residency is on: while the KV cache binds (the program gate is in
    force: working sets past `admit_high` and returning programs missing their held histories), order
    waiting calls by program arrival (program FCFS) and preempt none for the order; PLAS / ATLAS
    otherwise (docs/policy.md, rule 8)."""
    batch_wait_steps: int = 4096
    """The batch starvation bound: a call of a batch program that has waited this many engine steps in
    all stops yielding to interactive calls (docs/policy.md, rule 9). About 2-3 minutes of a busy
    engine: long against an interactive turn, short against a batch program's life."""
    table_ttl: float = 600.0
    """Seconds an idle program (no active call) stays in the process table."""
    residency: bool = True
    """Program-level KV residency (policy/residency.py, docs/policy.md "KV residency"): hold a paused
    program's history, evict ended programs' cache first, admit programs while their working sets fit.
    Applies where the engine carries it out (the simulator's and the plugin's program-aware policies)."""
    hold_max_s: float = 10.0
    """Longest expected pause worth a hold: a program expected back later (a chat user thinking) gets none."""
    hold_prior_s: float = 1.0
    """Expected pause of a program before this engine has observed any pause."""
    hold_slack: float = 2.0
    """A hold lasts `hold_slack` x the program's expected pause (robust to pauses longer than usual)."""
    hold_cap: float = 0.5
    """Most of the KV cache that holds may keep at once (a share of its blocks)."""
    admit_high: float = 0.9
    """Programs not yet admitted wait once admitted programs' working sets reach this share of the cache."""
    admit_low: float = 0.6
    """... and are let in again once the working sets fall below this share (hysteresis)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Reserved for policy-specific settings; unknown keys are rejected by `from_dict`."""

    def __post_init__(self) -> None:
        b = tuple(float(x) for x in self.boundaries)
        object.__setattr__(self, "boundaries", b)
        if len(b) < 2:
            raise ConfigError("boundaries: need at least two values (0 and inf)")
        if b[0] != 0:
            raise ConfigError(f"boundaries: must start at 0, got {b[0]}")
        if b[-1] != math.inf:
            raise ConfigError(f"boundaries: must end at inf, got {b[-1]}")
        if any(lo >= hi for lo, hi in zip(b, b[1:])):
            raise ConfigError(f"boundaries: must be strictly increasing, got {list(b)}")
        if self.quanta is not None:
            q = tuple(float(x) for x in self.quanta)
            object.__setattr__(self, "quanta", q)
            if len(q) != len(b) - 1:
                raise ConfigError(f"quanta: need {len(b) - 1} values (one per level), got {len(q)}")
            if any(not x > 0 for x in q):
                raise ConfigError(f"quanta: every quantum must be > 0, got {list(q)}")
        if not self.beta > 0:
            raise ConfigError(f"beta: must be > 0, got {self.beta}")
        if not self.prefill_weight >= 0:
            raise ConfigError(f"prefill_weight: must be >= 0, got {self.prefill_weight}")
        if self.max_preemptions < 0:
            raise ConfigError(f"max_preemptions: must be >= 0, got {self.max_preemptions}")
        if self.batch_wait_steps < 0:
            raise ConfigError(f"batch_wait_steps: must be >= 0, got {self.batch_wait_steps}")
        if self.preempt_gap < 1:
            raise ConfigError(f"preempt_gap: must be >= 1, got {self.preempt_gap}")
        if self.service_rule not in SERVICE_RULES:
            raise ConfigError(f"service_rule: must be one of {list(SERVICE_RULES)}, "
                              f"got {self.service_rule!r}")
        if self.level_order not in LEVEL_ORDERS:
            raise ConfigError(f"level_order: must be one of {list(LEVEL_ORDERS)}, got {self.level_order!r}")
        if not self.table_ttl > 0:
            raise ConfigError(f"table_ttl: must be > 0, got {self.table_ttl}")
        for key in ("hold_max_s", "hold_prior_s", "hold_slack"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.hold_cap <= 1:
            raise ConfigError(f"hold_cap: must be in [0, 1], got {self.hold_cap}")
        if not 0 < self.admit_low <= self.admit_high:
            raise ConfigError(f"admit_low / admit_high: need 0 < low <= high, got {self.admit_low}, "
                              f"{self.admit_high}")

    @property
    def num_levels(self) -> int:
        return len(self.boundaries) - 1

    def service(self, decode_tokens: float, computed_prompt_tokens: float) -> float:
        """A call's service for these tokens, in decode-token equivalents: decode tokens plus
        `prefill_weight` x prompt tokens actually computed (the one formula: the policies' `charge`
        and the gateway's accounting both use it)."""
        return decode_tokens + self.prefill_weight * computed_prompt_tokens

    def level_of(self, service: float) -> int:
        """The level whose [lo, hi) of `boundaries` holds `service` (the last level holds the rest)."""
        return bisect.bisect_right(self.boundaries, service, 0, len(self.boundaries) - 1) - 1

    def level_quanta(self) -> tuple[float, ...]:
        """Quantum per level; the last level never demotes."""
        if self.quanta is not None:
            return self.quanta[:-1] + (math.inf,)
        b = self.boundaries
        return tuple(hi - lo for lo, hi in zip(b, b[1:]))

    def new_table(self) -> ProcessTable:
        """A process table that follows these settings (TTL and service rule): every component builds
        its table here, so none can miss a setting."""
        return ProcessTable(self.table_ttl, self.service_rule)

    def replace(self, **changes: Any) -> PolicyConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PolicyConfig:
        """Build from plain values (JSON, CLI, vLLM additional-config). Unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown policy setting(s) {unknown}; valid: {sorted(names)}")
        kwargs = dict(values)
        for key in ("boundaries", "quanta"):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = _parse_floats(key, kwargs[key])
        for key, kind in (("beta", float), ("prefill_weight", float), ("table_ttl", float),
                          ("max_preemptions", int), ("preempt_gap", int), ("batch_wait_steps", int),
                          ("hold_max_s", float),
                          ("hold_prior_s", float), ("hold_slack", float), ("hold_cap", float),
                          ("admit_high", float), ("admit_low", float)):
            if key in kwargs:
                kwargs[key] = _coerce(key, kwargs[key], kind)
        for key in ("starvation", "residency", "adaptive_order"):
            if key in kwargs:
                kwargs[key] = parse_flag(key, kwargs[key])
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PolicyConfig:
        """Read `AUTELLIX_<FIELD>` variables, e.g. AUTELLIX_BETA=4, AUTELLIX_BOUNDARIES=0,64,inf."""
        env = os.environ if environ is None else environ
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        values = {n: env[f"AUTELLIX_{n.upper()}"] for n in names if f"AUTELLIX_{n.upper()}" in env}
        return cls.from_dict(values)


def _parse_floats(key: str, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError as exc:
        raise ConfigError(f"{key}: expected comma-separated numbers, got {text!r}") from exc


def parse_flag(key: str, value: Any) -> bool:
    """A boolean setting from JSON or an environment variable: true/false, 1/0, yes/no, on/off ("" is
    false). Anything else is a ConfigError naming `key`, not a silent False."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}: expected a boolean (1/0, true/false), got {value!r}")


def _coerce(key: str, value: Any, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}") from exc
