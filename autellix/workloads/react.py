"""ReAct function-calling programs with BFCL statistics and BFCL multi-turn structure.

Paper targets (docs/workloads.md): 10.75 calls/program (max 70), 735 prompt and 34 output tokens per call.
Here the 735 is the FULL prompt of a call (system tools + history), which cumulative history makes feasible.

Structure (one BFCL multi-turn task = one program; 400 tasks, base + miss_func, in shared/data/bfcl): for
each turn of `question`, the agent makes one LLM call per ground-truth tool call in `possible_answer`
(output = that call's real text size), each followed by a tool execution and its observation, then one
answer call (1 + tool calls per turn). An empty turn (miss_func) is the moment the missing function's doc
is handed to the model: its new text is that doc. Calls are sequential; each prompt = previous prompt +
previous output + new text (prefix_call = previous call).

Calibrated to the paper (each solved in closed form from the data unless noted):
- Retries: the tasks alone average ~9.9 calls; each tool call attempt fails with probability P_RETRY
  (geometric retries, each one more call + error observation) so the mean is exactly 10.75. Capped at 70.
- Answer length: mean solved so the per-call output mean is 34 (tool-call outputs keep their real sizes).
- System prompt: BFCL's JSON docs of the task's API classes (real text, 1.5k-9k GPT-2 tokens per task)
  times SYSTEM_FACTOR, tuned (scripts/workload_stats.py) so the per-call prompt mean is 735: the paper's
  size implies compact tool descriptions. The miss_func doc turn is scaled the same way.
- Assumed (BFCL has no execution logs): observations lognormal mean 60 tokens; tool pauses lognormal mean
  0.3 s, capped at 3 s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from autellix.workloads.data import count_tokens, data_file, read_jsonl
from autellix.workloads.sampling import check_args, lognormal, poisson_arrivals, rngs, token_counts
from autellix.workloads.spec import CallSpec, ProgramSpec

KIND = "react"
MEAN_CALLS = 10.75
MAX_CALLS = 70
MEAN_OUTPUT = 34.0
SYSTEM_FACTOR = 0.048  # tuned: per-call prompt mean 735 (see module docstring)
OBS_MEAN, OBS_SIGMA, OBS_CAP = 60.0, 1.0, 2048
ANSWER_SIGMA, ANSWER_CAP = 0.6, 1024
PAUSE_MEAN, PAUSE_SIGMA, PAUSE_CAP = 0.3, 0.8, 3.0
_FILES = ("BFCL_v4_multi_turn_base.json", "BFCL_v4_multi_turn_miss_func.json")
_CLASS_DOCS = {  # BFCL's own class -> doc file mapping
    "GorillaFileSystem": "gorilla_file_system.json",
    "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json",
    "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
}


@dataclass(frozen=True, slots=True)
class _Task:
    """One BFCL task: system text/tokens (scaled), per turn the new text/tokens and tool-call outputs."""

    system_text: str
    system_tokens: int
    turn_texts: tuple[str, ...]
    turn_tokens: tuple[int, ...]
    call_tokens: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class _Pool:
    tasks: tuple[_Task, ...]
    p_retry: float
    answer_mean: float


def _docs() -> dict[str, dict[str, tuple[str, int]]]:
    """class name -> {function name: (its JSON doc line, GPT-2 tokens)}. Tokenised once per function:
    a task's system prompt count is the sum over its functions (joins shift it by a token at most)."""
    out: dict[str, dict[str, tuple[str, int]]] = {}
    for cls, fname in _CLASS_DOCS.items():
        texts = {r["name"]: json.dumps(r)
                 for r in read_jsonl(data_file("bfcl", "multi_turn_func_doc", fname))}
        out[cls] = dict(zip(texts, zip(texts.values(), count_tokens(list(texts.values())))))
    return out


def _doc_text(
    docs: dict[str, dict[str, tuple[str, int]]], classes: list[str], only: set[str] | None, skip: set[str]
) -> tuple[str, int]:
    """Joined docs of the functions of `classes` (those in `only` if given, none in `skip`), and their
    token count."""
    chosen = [d for cls in classes for f, d in docs[cls].items()
              if (only is None or f in only) and f not in skip]
    return "\n".join(t for t, _ in chosen), sum(n for _, n in chosen)


def _scaled(n: int) -> int:
    return max(1, round(n * SYSTEM_FACTOR))


@lru_cache(maxsize=1)
def _pool() -> _Pool:
    docs = _docs()
    raw: list[tuple[tuple[str, int], list[tuple[str, int | None]], list[list[str]]]] = []
    # per task: (system text, tokens), per turn (text, doc tokens or None for user text), ground truth
    for fname in _FILES:
        answers = {r["id"]: r["ground_truth"]
                   for r in read_jsonl(data_file("bfcl", "possible_answer", fname))}
        for row in read_jsonl(data_file("bfcl", fname)):
            gt = answers[row["id"]]
            missed = {int(k): v for k, v in row.get("missed_function", {}).items()}
            hidden = {f for fs in missed.values() for f in fs} | set(row.get("excluded_function", []))
            classes = row["involved_classes"]
            system = _doc_text(docs, classes, None, hidden)
            turns: list[tuple[str, int | None]] = []
            for t, msgs in enumerate(row["question"]):
                if msgs:
                    turns.append(("\n".join(m["content"] for m in msgs), None))
                else:  # miss_func: the missing function's doc arrives at this turn
                    turns.append(_doc_text(docs, classes, set(missed.get(t, ())), set()))
            raw.append((system, turns, gt))
    turn_tok = count_tokens([t for r in raw for t, doc in r[1] if doc is None])
    call_tok = count_tokens([c for r in raw for turn in r[2] for c in turn])
    tasks: list[_Task] = []
    it_t, it_c = iter(turn_tok), iter(call_tok)
    for (system, turns, gt) in raw:
        # A doc turn is scaled like the system prompt; user text keeps its real size.
        tt = tuple(max(1, next(it_t)) if doc is None else _scaled(doc) for _, doc in turns)
        ct = tuple(tuple(next(it_c) for _ in turn) for turn in gt)
        tasks.append(_Task(system[0], _scaled(system[1]), tuple(t for t, _ in turns), tt, ct))
    # Closed-form calibration of retries and answer length from the task means.
    base_calls = float(np.mean([sum(1 + len(c) for c in t.call_tokens) for t in tasks]))
    tool_calls = float(np.mean([sum(len(c) for c in t.call_tokens) for t in tasks]))
    call_out = float(np.mean([sum(sum(c) for c in t.call_tokens) for t in tasks]))
    n_turns = float(np.mean([len(t.call_tokens) for t in tasks]))
    r: float = max(0.0, (MEAN_CALLS - base_calls) / tool_calls)  # expected retries per tool call = p/(1-p)
    p = r / (1 + r)
    answer_mean = (MEAN_OUTPUT * MEAN_CALLS - call_out * (1 + r)) / n_turns
    return _Pool(tuple(tasks), p, answer_mean)


def generate(n_programs: int, rate: float, seed: int) -> list[ProgramSpec]:
    """`n_programs` ReAct programs with Poisson arrivals at `rate`/s, reproducible from `seed`."""
    check_args(n_programs, rate)
    arrival_rng, rng = rngs(seed)
    arrivals = poisson_arrivals(arrival_rng, n_programs, rate)
    pool = _pool()
    task_idx = rng.integers(0, len(pool.tasks), n_programs).tolist()
    n_tool = sum(sum(len(c) for c in pool.tasks[i].call_tokens) for i in task_idx)
    n_turn = sum(len(pool.tasks[i].call_tokens) for i in task_idx)
    # Geometric failures before each tool call succeeds; each failure is one extra call.
    fails = (rng.geometric(1 - pool.p_retry, n_tool) - 1).tolist()
    n_obs = n_tool + sum(fails)
    obs = token_counts(rng, OBS_MEAN, OBS_SIGMA, n_obs, OBS_CAP)
    pauses = np.minimum(lognormal(rng, PAUSE_MEAN, PAUSE_SIGMA, n_obs), PAUSE_CAP).tolist()
    answers = token_counts(rng, pool.answer_mean, ANSWER_SIGMA, n_turn, ANSWER_CAP)
    it_fail, it_obs, it_pause, it_ans = iter(fails), iter(obs), iter(pauses), iter(answers)

    programs: list[ProgramSpec] = []
    for p, ti in enumerate(task_idx):
        task = pool.tasks[ti]
        calls: list[CallSpec] = []
        history = task.system_tokens  # tokens before the new text of the next call
        new, text, pause = 0, task.system_text, 0.0
        for turn_text, turn_tok, outs in zip(task.turn_texts, task.turn_tokens, task.call_tokens):
            new += turn_tok
            text = f"{text}\n{turn_text}" if calls == [] else turn_text
            steps = [(o, "tool") for o in outs for _ in range(1 + next(it_fail))] + [(0, "answer")]
            for out, role in steps:
                if len(calls) == MAX_CALLS:
                    break
                if role == "answer":
                    out = next(it_ans)
                k = len(calls)
                calls.append(CallSpec(history + new, out, 0, (k - 1,) if k else (), pause,
                                      k - 1 if k else None, text, role))
                history += new + out
                if role == "tool":  # the tool runs, then its observation is the next call's new text
                    new, text, pause = next(it_obs), None, next(it_pause)
                else:
                    new, text, pause = 0, None, 0.0
        programs.append(ProgramSpec(f"{KIND}-{p:06d}", KIND, arrivals[p], tuple(calls)))
    return programs
