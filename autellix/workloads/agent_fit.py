"""Fit the agent-family parameters on recorded sessions (the shared mini-swe-agent traces by default).

`fit_sessions` is a pure function of the sessions' calls (each a chain with cumulative history, as
`coding.py` reconstructs them), so the fit is reproducible and testable; `fit_miniswe` applies it to the
10 sessions in shared/data/lmcache_agent_trace/miniswe. What is fitted, per quantity:

- turns per session: lognormal rounded up and censored at the step limit (the longest session, reached by
  several sessions: mini-swe-agent stops at 30 steps), maximum likelihood over a refined grid;
- first prompt (system + task), new tokens per later call (observation), outputs, tool pauses: lognormal,
  arithmetic mean and log-space standard deviation of the pooled values (pauses: the positive ones, capped
  at coding.PAUSE_CAP as the replay caps them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from autellix.workloads.agent_params import AgentParams, TurnDist, turns_pmf
from autellix.workloads.spec import CallSpec

GRID_POINTS, GRID_ROUNDS = 41, 6
"""Turn-count MLE: a 41 x 41 grid over (mu, sigma), narrowed around the best point 6 times (the search
step ends below 1e-4 of the initial span, far finer than 10 sessions can resolve)."""


def _lognormal_fit(values: Sequence[float]) -> tuple[float, float]:
    """(arithmetic mean, log-space std) of positive values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0 or (x <= 0).any():
        raise ValueError("lognormal fit: need one or more positive values")
    return float(x.mean()), float(np.log(x).std())


def _turns_loglik(mu: float, sigma: float, counts: np.ndarray, cap: int) -> float:
    pmf = np.maximum(np.array(turns_pmf(mu, sigma, cap)), 1e-300)
    return float(np.log(pmf[counts - 1]).sum())


def fit_turns(counts: Sequence[int], max_turns: int | None = None) -> TurnDist:
    """Censored-lognormal MLE of turn counts; `max_turns` (default: the largest count) is the step limit at
    which sessions are cut off. Raises ValueError for fewer than 2 distinct counts."""
    c = np.asarray(counts, dtype=np.int64)
    if len(set(c.tolist())) < 2 or (c < 1).any():
        raise ValueError(f"fit_turns: need counts >= 1 with at least 2 distinct values, got {c.tolist()}")
    cap = int(max_turns or c.max())
    logs = np.log(c)
    mu_lo, mu_hi = float(logs.min()), math.log(cap) + 3 * float(logs.std() + 1)
    s_lo, s_hi = 0.05, 3.0
    best = (float(logs.mean()), float(logs.std() or 1.0))
    for _ in range(GRID_ROUNDS):
        mus, sigmas = np.linspace(mu_lo, mu_hi, GRID_POINTS), np.linspace(s_lo, s_hi, GRID_POINTS)
        ll, best = max((_turns_loglik(m, s, c, cap), (float(m), float(s))) for m in mus for s in sigmas)
        dm, ds = (mu_hi - mu_lo) / 8, (s_hi - s_lo) / 8
        mu_lo, mu_hi = best[0] - dm, best[0] + dm
        s_lo, s_hi = max(0.01, best[1] - ds), best[1] + ds
    return TurnDist(best[0], best[1], cap)


def session_stats(sessions: Sequence[Sequence[CallSpec]]) -> dict[str, float]:
    """The sessions' own statistics that a fit must reproduce: mean turns, first prompt, new tokens per
    later call, output per call, tool pause per later call, full prompt per call."""
    return {
        "turns": float(np.mean([len(s) for s in sessions])),
        "first_prompt": float(np.mean([s[0].prompt_tokens for s in sessions])),
        "new": float(np.mean([_new(s, k) for s in sessions for k in range(1, len(s))])),
        "output": float(np.mean([c.output_tokens for s in sessions for c in s])),
        "pause": float(np.mean([c.tool_pause for s in sessions for c in s[1:]])),
        "prompt": float(np.mean([c.prompt_tokens for s in sessions for c in s])),
    }


def _new(session: Sequence[CallSpec], k: int) -> int:
    prev = session[k - 1]
    return session[k].prompt_tokens - prev.prompt_tokens - prev.output_tokens


def fit_sessions(sessions: Sequence[Sequence[CallSpec]], pause_cap: float) -> AgentParams:
    """AgentParams (no subagents) fitted on sessions whose calls are chains with cumulative history
    (call k's prefix call is k-1). Raises ValueError if a session is not such a chain."""
    for s in sessions:
        for k, c in enumerate(s):
            if c.prefix_call != (k - 1 if k else None):
                raise ValueError(f"fit_sessions: call {k} does not extend call {k - 1}'s history")
    first = _lognormal_fit([s[0].prompt_tokens for s in sessions])
    new = _lognormal_fit([max(1, _new(s, k)) for s in sessions for k in range(1, len(s))])
    out = _lognormal_fit([c.output_tokens for s in sessions for c in s])
    pauses = [c.tool_pause for s in sessions for c in s[1:]]
    pause_sigma = _lognormal_fit([p for p in pauses if p > 0])[1]
    return AgentParams(fit_turns([len(s) for s in sessions]), *first, *new, *out,
                       float(np.mean(pauses)), pause_sigma, pause_cap)


def miniswe_sessions() -> tuple[tuple[CallSpec, ...], ...]:
    """The 10 recorded mini-swe-agent sessions, as the `coding` replay reconstructs them."""
    from autellix.workloads import coding

    return tuple(s.calls for s in coding._sessions())


@lru_cache(maxsize=1)
def fit_miniswe() -> AgentParams:
    """fit_sessions on the shared mini-swe-agent sessions (cached per process)."""
    from autellix.workloads.coding import PAUSE_CAP

    return fit_sessions(miniswe_sessions(), PAUSE_CAP)
