"""A family of coding-agent fleets: one parametric generator, presets from today's sessions to long ones.

`coding` replays the 10 recorded mini-swe-agent sessions exactly; this module draws new sessions from
distributions fitted on them (agent_fit.py) and shifted to other fleets' published statistics:

- `agent-swe`: the fit itself, today's sessions (about 24 calls, 7.5k-token mean prompt, 266 new tokens per
  turn, 152 output tokens per call, 0.69 s tool pauses).
- `agent-bigturn`: fewer, bigger turns, like ten held-out mini-swe-agent sessions (16 calls per program,
  mean prompt 14k tokens, ~930 new tokens per turn). The turn distribution's mu is moved to a mean of 16
  (sigma and step limit kept), new tokens per turn set to 930, and the first prompt solved in closed form
  so the mean prompt per call is 14k. Outputs and pauses: the fit.
- `agent-long`: Claude-Code-like sessions (vLLM RFC #57103 / SemiAnalysis AgentX, 393 traces): median 43
  turns, ~142k-token contexts, ~444 output tokens per call, >96% prefix reuse, subagents forking from the
  parent's history in 44% of sessions. mu = log(42.5), so the median is 43 (sigma: the fit); new tokens
  per turn solved so a 43-turn session ends at 142k tokens; turns censored where that growth reaches
  Claude's 200k-token context window (compaction is not modelled). Assumed, as the source gives no
  figure: one subagent per spawning session, at a uniformly drawn parent turn, running a fitted swe-length
  session (the same per-turn statistics as its parent).
- `agent-mix`: one fleet with the three presets in equal shares (drawn per program).

Subagents (blocking): the subagent is its own thread; its first call's prompt extends the parent's
history (prefix_call = the parent's call before the fork; its new tokens, the task, are one per-turn
draw) and it runs a chain of turns with the same cumulative history. The parent's next call depends on
the subagent's last call and extends the parent's own history (prefix_call = its call before the fork)
with the subagent's last output (its result) plus a new observation. ProgramSpec's invariants hold
unchanged: every thread is a chain, and the parent's previous call is a transitive dependency of both
(through the subagent's chain).

Peak working set (`peak_history_tokens`): one thread runs at a time and every subagent's history extends
the parent's, so the blocks a session needs at once are the largest call's prompt + output. The fleet's
`working_set_fit` uses the last call's, which misses a subagent that ends above the parent's final history
(29% of agent-long's sessions; such a peak may pass the 200k window, as the subagent adds its own turns to
the forked history).

Seeded like every workload (sampling.rngs): the same seed gives the same programs, and across rates the
same programs with arrival times scaled by 1/rate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import lru_cache, partial

import numpy as np

from autellix.workloads.agent_fit import fit_miniswe
from autellix.workloads.agent_params import AgentParams, TurnDist, mu_for_mean
from autellix.workloads.sampling import check_args, lognormal, poisson_arrivals, rngs
from autellix.workloads.spec import CallSpec, ProgramSpec

# agent-bigturn: ten held-out mini-swe-agent sessions (the table).
BIGTURN_TURNS_MEAN, BIGTURN_PROMPT_MEAN, BIGTURN_NEW_MEAN = 16.0, 14_000.0, 930.0
# agent-long: Claude Code fleets (vLLM RFC #57103 / AgentX).
LONG_TURNS_MEDIAN, LONG_CONTEXT, LONG_OUTPUT_MEAN, LONG_SUBAGENT_SHARE = 43, 142_000.0, 444.0, 0.44
CONTEXT_WINDOW = 200_000
"""Claude's context window (tokens): agent-long sessions stop growing where they would exceed it."""

PresetFn = Callable[[], AgentParams]


@lru_cache(maxsize=1)
def swe() -> AgentParams:
    """Today's sessions: the fit on the shared mini-swe-agent traces."""
    return fit_miniswe()


@lru_cache(maxsize=1)
def bigturn() -> AgentParams:
    """Fewer, bigger turns: 16 calls, 14k-token mean prompt, 930 new tokens per turn."""
    base = swe()
    turns = TurnDist(mu_for_mean(BIGTURN_TURNS_MEAN, base.turns.sigma, base.turns.max_turns),
                     base.turns.sigma, base.turns.max_turns)
    draft = dataclasses.replace(base, turns=turns, new_mean=BIGTURN_NEW_MEAN)
    first = BIGTURN_PROMPT_MEAN - (draft.mean_prompt() - draft.first_prompt_mean)
    if first <= 0:
        raise ValueError("agent-bigturn: the targets leave no room for a first prompt")
    return dataclasses.replace(draft, first_prompt_mean=first)


@lru_cache(maxsize=1)
def long() -> AgentParams:
    """Claude-Code-like: median 43 turns, a 43-turn session ending at 142k tokens on average, 444-token
    outputs, subagents in 44% of sessions, turns limited where that growth fills the context window."""
    base = swe()
    n, out = LONG_TURNS_MEDIAN, LONG_OUTPUT_MEAN
    new = (LONG_CONTEXT - base.first_prompt_mean - n * out) / (n - 1)  # final_context(43) = LONG_CONTEXT
    max_turns = 1 + math.floor((CONTEXT_WINDOW - base.first_prompt_mean - out) / (new + out))
    mu = math.log(n - 0.5)  # P(ceil(X) <= 43) > 1/2 > P(ceil(X) <= 42): the median is 43
    return dataclasses.replace(base, turns=TurnDist(mu, base.turns.sigma, max_turns), new_mean=new,
                               output_mean=out, subagent_share=LONG_SUBAGENT_SHARE, subagents_per_spawn=1.0,
                               subagent_turns=base.turns)


PRESETS: dict[str, PresetFn] = {"agent-swe": swe, "agent-bigturn": bigturn, "agent-long": long}
"""Workload name -> its parameters (agent-mix draws among these)."""


# -- sampling -----------------------------------------------------------------------------------------

def _tokens(rng: np.random.Generator, mean: float, sigma: float, size: int) -> list[int]:
    """`size` lognormal token counts with arithmetic mean `mean`, rounded, each >= 1."""
    return np.maximum(1, np.rint(lognormal(rng, mean, sigma, size))).astype(np.int64).tolist()


def _pauses(rng: np.random.Generator, p: AgentParams, size: int) -> list[float]:
    return np.minimum(p.pause_cap, lognormal(rng, p.pause_mean, p.pause_sigma, size)).tolist()


def _fork_turns(rng: np.random.Generator, p: AgentParams, turns: int) -> set[int]:
    """Parent turns (1..turns-1) before which a subagent runs; empty for most sessions. The parent's
    last call always follows the last subagent, so it ends the program."""
    if turns < 2 or rng.random() >= p.subagent_share:
        return set()
    k = min(turns - 1, 1 + int(rng.poisson(p.subagents_per_spawn - 1)))
    return {int(t) for t in rng.choice(np.arange(1, turns), size=k, replace=False)}


def session_calls(rng: np.random.Generator, p: AgentParams) -> tuple[CallSpec, ...]:
    """One session's calls in topological order: parent turns on thread 0, each subagent on its own
    thread, spliced in before the parent turn that waits for it."""
    turns = int(p.turns.sample(rng, 1)[0])
    forks = _fork_turns(rng, p, turns)
    first = _tokens(rng, p.first_prompt_mean, p.first_prompt_sigma, 1)[0]
    outs, news, pauses = (_tokens(rng, p.output_mean, p.output_sigma, turns),
                          _tokens(rng, p.new_mean, p.new_sigma, turns), _pauses(rng, p, turns))
    calls: list[CallSpec] = [CallSpec(first, outs[0], 0, (), 0.0, None, None, "step")]
    parent, thread = 0, 0
    for k in range(1, turns):
        base = calls[parent]
        dep, result = parent, 0
        if k in forks:
            thread += 1
            dep = _subagent(rng, p, calls, parent, thread)
            result = calls[dep].output_tokens
        calls.append(CallSpec(base.prompt_tokens + base.output_tokens + result + news[k], outs[k], 0,
                              (dep,), pauses[k], parent, None, "step"))
        parent = len(calls) - 1
    return tuple(calls)


def _subagent(rng: np.random.Generator, p: AgentParams, calls: list[CallSpec], fork: int,
              thread: int) -> int:
    """Append one subagent's chain forking from call `fork`; return its last call's index."""
    turns = int((p.subagent_turns or p.turns).sample(rng, 1)[0])
    outs, news, pauses = (_tokens(rng, p.output_mean, p.output_sigma, turns),
                          _tokens(rng, p.new_mean, p.new_sigma, turns), _pauses(rng, p, turns))
    prev = fork
    for k in range(turns):
        base = calls[prev]
        calls.append(CallSpec(base.prompt_tokens + base.output_tokens + news[k], outs[k], thread, (prev,),
                              pauses[k], prev, None, "subagent"))
        prev = len(calls) - 1
    return prev


def peak_history_tokens(program: ProgramSpec) -> int:
    """Tokens of KV a session holds at its peak: its largest call's prompt + output. Exact when one
    thread runs at a time and each thread's history extends the one it forked from (this family);
    a lower bound for concurrent threads."""
    return max(c.prompt_tokens + c.output_tokens for c in program.calls)


# -- generators ----------------------------------------------------------------------------------------

def _generate(kind: str, params: list[AgentParams], n_programs: int, rate: float,
              seed: int) -> list[ProgramSpec]:
    check_args(n_programs, rate)
    arrival_rng, rng = rngs(seed)
    arrivals = poisson_arrivals(arrival_rng, n_programs, rate)
    picks = rng.integers(0, len(params), n_programs).tolist()
    return [ProgramSpec(f"{kind}-{i:06d}", kind, arrivals[i], session_calls(rng, params[picks[i]]))
            for i in range(n_programs)]


def _generate_named(name: str, n_programs: int, rate: float, seed: int) -> list[ProgramSpec]:
    params = [f() for f in PRESETS.values()] if name == "agent-mix" else [PRESETS[name]()]
    return _generate(name, params, n_programs, rate, seed)


def generator(name: str) -> Callable[[int, float, int], list[ProgramSpec]]:
    """`generate(n_programs, rate, seed)` for one family workload name (a preset or agent-mix)."""
    if name != "agent-mix" and name not in PRESETS:
        raise ValueError(f"unknown agent-family workload {name!r}; choose one of {[*PRESETS, 'agent-mix']}")
    return partial(_generate_named, name)


FAMILY: tuple[str, ...] = (*PRESETS, "agent-mix")
"""Every family workload name, in the order reports list them."""
