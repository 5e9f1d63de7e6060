"""Measured statistics of agent-family programs, and each preset's targets with their sources.

Definitions (parent = thread 0; a subagent's calls count in `calls`, `output`, `reuse` and `peak` only):
- turns, turns_median: parent calls per program; first_prompt: the first call's prompt;
- prompt: full prompt per parent call; new: new prompt tokens per later parent call (beyond the previous
  parent call's prompt + output: the observation, plus a subagent's result after a fork);
- output: output tokens per call; pause: tool pause per later call (s); calls: all calls per program;
- reuse: 1 - new prompt tokens / prompt tokens over all calls (what a perfect prefix cache serves);
- subagent_share: share of programs with subagents; final: the parent's last prompt + output;
- final_at_median: mean `final` of the programs within MEDIAN_BAND turns of the median (the context a
  median-length session ends at); peak: mean peak working set (agent_family.peak_history_tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autellix.workloads.agent_family import (
    BIGTURN_NEW_MEAN,
    BIGTURN_PROMPT_MEAN,
    BIGTURN_TURNS_MEAN,
    LONG_CONTEXT,
    LONG_OUTPUT_MEAN,
    LONG_SUBAGENT_SHARE,
    LONG_TURNS_MEDIAN,
    peak_history_tokens,
)
from autellix.workloads.agent_fit import miniswe_sessions, session_stats
from autellix.workloads.spec import ProgramSpec

MEDIAN_BAND = 2
"""final_at_median averages sessions of median +- 2 turns: final grows linearly in turns, so the band's
mean is the median's, with ~5x the sessions of the median alone."""
LONG_REUSE_MIN = 0.96
"""agent-long: more than 96% prefix reuse (a lower bound, not a target value)."""


def family_stats(programs: Sequence[ProgramSpec]) -> dict[str, float]:
    """The module docstring's statistics over `programs`."""
    parents = [[i for i, c in enumerate(p.calls) if c.thread == 0] for p in programs]
    turns = np.array([len(ix) for ix in parents])
    final = np.array([p.calls[ix[-1]].prompt_tokens + p.calls[ix[-1]].output_tokens
                      for p, ix in zip(programs, parents)])
    median = float(np.median(turns))
    band = np.abs(turns - median) <= MEDIAN_BAND
    prompt_all = sum(p.total_prompt_tokens for p in programs)
    new_all = sum(p.new_prompt_tokens(i) for p in programs for i in range(p.num_calls))
    return {
        "programs": len(programs),
        "turns": float(turns.mean()),
        "turns_median": median,
        "first_prompt": float(np.mean([p.calls[0].prompt_tokens for p in programs])),
        "prompt": float(np.mean([p.calls[i].prompt_tokens for p, ix in zip(programs, parents) for i in ix])),
        "new": float(np.mean([_parent_new(p, ix, k) for p, ix in zip(programs, parents)
                              for k in range(1, len(ix))])),
        "output": float(np.mean([c.output_tokens for p in programs for c in p.calls])),
        "pause": float(np.mean([c.tool_pause for p in programs for c in p.calls if c.depends_on])),
        "calls": float(np.mean([p.num_calls for p in programs])),
        "reuse": 1 - new_all / prompt_all,
        "subagent_share": float(np.mean([p.num_threads > 1 for p in programs])),
        "final": float(final.mean()),
        "final_at_median": float(final[band].mean()) if band.any() else float("nan"),
        "peak": float(np.mean([peak_history_tokens(p) for p in programs])),
    }


def _parent_new(p: ProgramSpec, ix: list[int], k: int) -> int:
    prev = p.calls[ix[k - 1]]
    return p.calls[ix[k]].prompt_tokens - prev.prompt_tokens - prev.output_tokens


def targets() -> dict[str, dict[str, float]]:
    """Per preset: statistic -> target. agent-swe's are the recorded sessions' own statistics (its fit
    must recover them); agent-bigturn's are the ten held-out sessions'; agent-long's are the Claude Code
    figures (vLLM RFC #57103 / AgentX). `reuse` for agent-long is a lower bound (LONG_REUSE_MIN)."""
    data = session_stats(miniswe_sessions())
    return {
        "agent-swe": {k: data[k] for k in ("turns", "first_prompt", "prompt", "new", "output", "pause")},
        "agent-bigturn": {"turns": BIGTURN_TURNS_MEAN, "prompt": BIGTURN_PROMPT_MEAN,
                          "new": BIGTURN_NEW_MEAN},
        "agent-long": {"turns_median": LONG_TURNS_MEDIAN, "final_at_median": LONG_CONTEXT,
                       "output": LONG_OUTPUT_MEAN, "subagent_share": LONG_SUBAGENT_SHARE,
                       "reuse": LONG_REUSE_MIN},
    }
