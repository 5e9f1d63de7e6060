"""Coding-agent programs: exact replays of the 10 real mini-swe-agent sessions (SWE-bench, django).

Source: shared/data/lmcache_agent_trace/miniswe, one file per session, one line per LLM call with its full
prompt text, output text and timestamp. Calls are ordered by timestamp (the file order is not), which
makes every prompt a strict text prefix of the next. A program is one session picked at random (seeded):
the same sessions repeat, each exactly as recorded; tokens are GPT-2 BPE counts.

Cumulative history: the trace's `input` holds the system/user/tool messages only, not the assistant's
replies, although mini-swe-agent sends its whole message list (replies included) each step. We put them
back: prompt_k = prompt_{k-1} + output_{k-1} + new_k, where new_k is the text the trace appends between
calls (the command's observation), so prefix_call = k - 1 holds exactly. prompt_text is that new text
(the whole first prompt for call 0).

Tool pauses: the gap between consecutive call timestamps includes the original model's generation; a
least-squares fit over the 228 gaps gives 0.69 s + 3.4 ms per output token, so the pause is the gap minus
3.4 ms per output token of the previous call, clipped to [0, 5] s.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from autellix.workloads.data import count_tokens, data_dir, read_jsonl
from autellix.workloads.sampling import check_args, poisson_arrivals, rngs
from autellix.workloads.spec import CallSpec, ProgramSpec

KIND = "coding"
GEN_S_PER_TOKEN = 0.0034  # fitted generation time of the original model (see module docstring)
PAUSE_CAP = 5.0


@dataclass(frozen=True, slots=True)
class _Session:
    session_id: str
    calls: tuple[CallSpec, ...]


@lru_cache(maxsize=1)
def _sessions() -> tuple[_Session, ...]:
    folder = data_dir() / "lmcache_agent_trace" / "miniswe"
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no mini-swe-agent sessions (*.jsonl) in {folder}")
    sessions: list[_Session] = []
    for path in files:
        rows = sorted(read_jsonl(path), key=lambda r: r["timestamp"])
        news: list[str] = []
        for k, r in enumerate(rows):
            prev = rows[k - 1]["input"] if k else ""
            if not r["input"].startswith(prev):
                raise ValueError(f"{path.name}: call {k}'s prompt does not extend call {k - 1}'s")
            news.append(r["input"][len(prev):])
        n_new = count_tokens(news)
        n_out = count_tokens([r["output"] for r in rows])
        calls: list[CallSpec] = []
        history = 0
        for k, r in enumerate(rows):
            pause = 0.0
            if k:
                gap = (r["timestamp"] - rows[k - 1]["timestamp"]) / 1e6
                pause = min(PAUSE_CAP, max(0.0, gap - GEN_S_PER_TOKEN * n_out[k - 1]))
            calls.append(CallSpec(history + max(1, n_new[k]), max(1, n_out[k]), 0, (k - 1,) if k else (),
                                  pause, k - 1 if k else None, news[k], "step"))
            history += max(1, n_new[k]) + max(1, n_out[k])
        sessions.append(_Session(str(rows[0].get("session_id", path.stem)), tuple(calls)))
    return tuple(sessions)


def generate(n_programs: int, rate: float, seed: int) -> list[ProgramSpec]:
    """`n_programs` session replays with Poisson arrivals at `rate`/s, reproducible from `seed`."""
    check_args(n_programs, rate)
    arrival_rng, rng = rngs(seed)
    arrivals = poisson_arrivals(arrival_rng, n_programs, rate)
    sessions = _sessions()
    picks = rng.integers(0, len(sessions), n_programs).tolist()
    return [ProgramSpec(f"{KIND}-{p:06d}", KIND, arrivals[p], sessions[s].calls) for p, s in enumerate(picks)]
