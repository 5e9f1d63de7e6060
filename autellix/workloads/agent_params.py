"""Parameters of one parametric coding-agent fleet (`agent_family`), and the turn-count distribution.

A session (program) is a parent thread of `turns` sequential LLM calls with cumulative history
(prompt_k = prompt_{k-1} + output_{k-1} + new_k), a tool pause before every call but the first, and, with
probability `subagent_share`, blocking subagents that fork from the parent's history (agent_family.py).

Turn counts are a lognormal rounded up to integers and censored at a step limit: n = min(max_turns,
ceil(X)), X ~ LogNormal(mu, sigma). Censoring (not truncation) is what the mini-swe-agent sessions show:
7 of the 10 stop at exactly 30 calls, the agent's step limit. `turns_pmf` gives the exact distribution,
so expectations (mean prompt, final context) are computed in closed form rather than by sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True, slots=True)
class TurnDist:
    """n = min(max_turns, max(1, ceil(X))), X ~ LogNormal(mu, sigma).

    Invariants (checked): sigma > 0, max_turns >= 1, mu finite.
    """

    mu: float
    sigma: float
    max_turns: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and self.sigma > 0 and self.max_turns >= 1):
            raise ValueError(f"TurnDist: need finite mu, sigma > 0, max_turns >= 1, got {self}")

    def pmf(self) -> np.ndarray:
        """P(n = k) for k = 1..max_turns (index k-1)."""
        return np.array(turns_pmf(self.mu, self.sigma, self.max_turns))

    def mean(self) -> float:
        return float(self.pmf() @ np.arange(1, self.max_turns + 1))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        x = np.ceil(rng.lognormal(self.mu, self.sigma, size))
        return np.clip(x, 1, self.max_turns).astype(np.int64)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@cache
def turns_pmf(mu: float, sigma: float, max_turns: int) -> tuple[float, ...]:
    """Exact pmf of min(max_turns, max(1, ceil(LogNormal(mu, sigma)))) over 1..max_turns."""
    cdf = [_phi((math.log(k) - mu) / sigma) for k in range(1, max_turns)]  # P(X <= k), k < max_turns
    edges = [0.0, *cdf, 1.0]
    return tuple(float(b - a) for a, b in zip(edges[:-1], edges[1:]))


def mu_for_mean(mean: float, sigma: float, max_turns: int) -> float:
    """The mu whose censored turn distribution has exactly `mean` turns (bisection: the mean rises with mu).
    Raises ValueError unless 1 < mean < max_turns."""
    if not 1 < mean < max_turns:
        raise ValueError(f"mean turns {mean} must lie strictly between 1 and max_turns {max_turns}")
    ks = np.arange(1, max_turns + 1)
    lo, hi = -10.0, math.log(max_turns) + 10 * sigma
    for _ in range(100):
        mid = (lo + hi) / 2
        if float(np.array(turns_pmf(mid, sigma, max_turns)) @ ks) < mean:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True, slots=True)
class AgentParams:
    """Everything one fleet preset draws from. Token sizes are lognormal with the given arithmetic mean and
    log-space sigma (sampling.lognormal), rounded, >= 1; pauses likewise, capped at `pause_cap` s.

    Invariants (checked): every mean > 0, every sigma >= 0, 0 <= subagent_share <= 1,
    subagents_per_spawn >= 1, pause_cap >= 0.
    """

    turns: TurnDist
    """Parent calls per session."""
    first_prompt_mean: float
    first_prompt_sigma: float
    """System prompt + task: the whole first prompt."""
    new_mean: float
    new_sigma: float
    """New prompt tokens per later call (the tool's observation): prompt_k - prompt_{k-1} - output_{k-1}."""
    output_mean: float
    output_sigma: float
    pause_mean: float
    pause_sigma: float
    pause_cap: float
    """Tool pause before every call but a thread's first (s)."""
    subagent_share: float = 0.0
    """Probability that a session spawns subagents."""
    subagents_per_spawn: float = 1.0
    """Mean subagents of a spawning session: 1 + Poisson(subagents_per_spawn - 1), each at its own turn."""
    subagent_turns: TurnDist | None = None
    """Calls per subagent (None: the parent's distribution)."""

    def __post_init__(self) -> None:
        means = (self.first_prompt_mean, self.new_mean, self.output_mean, self.pause_mean)
        sigmas = (self.first_prompt_sigma, self.new_sigma, self.output_sigma, self.pause_sigma)
        if not all(m > 0 for m in means) or not all(s >= 0 for s in sigmas):
            raise ValueError(f"AgentParams: means must be > 0 and sigmas >= 0, got {self}")
        if not 0 <= self.subagent_share <= 1 or self.subagents_per_spawn < 1 or self.pause_cap < 0:
            raise ValueError(f"AgentParams: need 0 <= subagent_share <= 1, subagents_per_spawn >= 1, "
                             f"pause_cap >= 0, got {self}")

    @property
    def growth_mean(self) -> float:
        """Mean context growth per turn: the previous output plus the new observation."""
        return self.new_mean + self.output_mean

    def mean_prompt(self) -> float:
        """Expected full prompt per parent call, exactly over the turn pmf: prompt_k = P0 + k x growth, so
        the mean over calls is P0 + growth x E[n(n-1)/2] / E[n] (subagents not counted)."""
        pmf, ks = self.turns.pmf(), np.arange(1, self.turns.max_turns + 1)
        return self.first_prompt_mean + self.growth_mean * float(pmf @ (ks * (ks - 1) / 2)) / float(pmf @ ks)

    def final_context(self, turns: int) -> float:
        """Expected parent history after `turns` calls (last prompt + its output)."""
        return self.first_prompt_mean + turns * self.output_mean + (turns - 1) * self.new_mean
