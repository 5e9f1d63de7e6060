"""LATS-style Monte-Carlo tree search over HotpotQA questions: wide, parallel programs.

Paper targets (docs/workloads.md): 159.7 calls/program, 467 prompt (full) and 73 output tokens per call.

Structure, read off the real LATS runs in shared/data/lats: every expansion samples 5 children (the logs'
`SAMPLED ACTION` lists hold 5 actions; the paper issues them as 5 parallel calls), each child's action runs
in the environment (a Wikipedia lookup: the gaps between the log's `NEW NODE` lines are these tool
pauses), then one value call scores each child (`VALUE PROMPT` per child in the webshop log). So a step
is 5 sample calls on threads 0-4, and on each thread a value call after its sample; the next step waits
for all 5 values (selection needs them). Steps form MCTS iterations: a rollout continues from one child
until a terminal answer (P_TERMINAL per step) or the depth limit 7 (LATS' HotpotQA setting), then a new
iteration expands a node picked among all unexpanded children so far.

Tree size: the HumanEval MCTS file's `reflections` per problem (mean 42.7, 0-122, many quick solves and
a block of problems that exhaust the budget) is the only real per-program tree-size record; steps per
program are `round(c * (1 + reflections))` of a random problem, with c solved so the mean is exactly
159.7 / 10 steps.

Tokens: real log proportions, scaled to the paper's means. Sample and value outputs keep their measured
ratio (thought+action vs. reflection), one factor brings the per-call output mean to 73. A sample prompt
is the few-shot base + question + trajectory, and its prefix_call is the sample call that produced the
expanded node (trajectory = that call's prompt + its output + the observation). A value prompt is a value
few-shot base + the child's trajectory; it does not extend any call's prompt + output (prefix_call None).
Prompt-side sizes (bases, observations) keep their real ratio and are scaled by PROMPT_FACTOR, tuned
(scripts/workload_stats.py) so the per-call prompt mean is 467. At the real depth (~4.4 per call) and
real sample sizes, the paper's mean leaves room for only a tenth of LATS' own prompt-side text (a ~164-
token base instead of ~1,575, ~8-token observations instead of ~80): the trajectory growth with depth,
the prefix sharing and the fan-out are what this workload keeps.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np

from autellix.workloads.data import count_tokens, data_file, read_json, read_jsonl
from autellix.workloads.sampling import check_args, poisson_arrivals, rngs, token_counts
from autellix.workloads.spec import CallSpec, ProgramSpec

KIND = "tree"
MEAN_CALLS = 159.7
WIDTH = 5  # samples per expansion = parallel threads
MAX_DEPTH = 7
P_TERMINAL = 0.25  # chance a rollout step's children reach Finish[...] (ReAct HotpotQA: ~4 steps)
MEAN_OUTPUT = 73.0
PROMPT_FACTOR = 0.104  # tuned: per-call prompt mean 467 (see module docstring)
SIGMA = 0.5  # log-space spread of each token size around its measured mean
PAUSE_CAP = 5.0
_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - INFO - (.*)$")


@dataclass(frozen=True, slots=True)
class _Lats:
    questions: tuple[str, ...]
    fewshot: str  # LATS' real HotpotQA instructions + examples (the text before the task's question)
    steps: tuple[int, ...]  # steps per program, one entry per real MCTS problem
    pauses: tuple[float, ...]  # seconds of observed environment steps
    base: float  # prompt-side means, already x PROMPT_FACTOR
    obs: float
    sample_out: float  # output means, scaled to MEAN_OUTPUT together
    value_out: float


def _log_lines(name: str) -> list[tuple[float, str]]:
    """(seconds, message) of each INFO record; a record's continuation lines are joined to it."""
    records: list[tuple[float, str]] = []
    for line in data_file("lats", name).read_text(encoding="utf-8").splitlines():
        m = _TS.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            records.append((t, m.group(2)))
        elif records:
            records[-1] = (records[-1][0], records[-1][1] + "\n" + line)
    return records


@lru_cache(maxsize=1)
def _lats() -> _Lats:
    hotpot = read_json(data_file("lats", "hotpot_data_hotpot_dev_v1_simplified.json"))
    questions = tuple(q["question"] for q in hotpot)
    hot = _log_lines("hotpot_tot_10it.log")
    prompts = [m[len("PROMPT: "):] for _, m in hot if m.startswith("PROMPT: ")]
    samples = [s for _, m in hot if m.startswith("SAMPLED ACTION: ") for s in ast.literal_eval(m[16:])]
    obs = [o for p in prompts[-1:] for o in re.findall(r"Observation \d+: (.*)", p)]
    pauses: list[float] = []  # each NEW NODE follows one environment step after the previous record
    for (t0, m0), (t1, m1) in zip(hot, hot[1:]):
        if m1.startswith("NEW NODE") and (m0.startswith("SAMPLED ACTION") or m0.startswith("Feedback")):
            pauses.append(t1 - t0)
    web = _log_lines("webshop_logs_example.log")
    values = [v for _, m in web if m.startswith("VALUE OUTPUTS: ") for v in ast.literal_eval(m[15:])]
    fewshot = prompts[0][: prompts[0].rfind("\nQuestion: ")]
    n_base, *n_rest = count_tokens([prompts[0], *samples, *obs, *values])
    s_out = float(np.mean(n_rest[: len(samples)]))
    o_tok = float(np.mean(n_rest[len(samples): len(samples) + len(obs)]))
    v_out = float(np.mean(n_rest[len(samples) + len(obs):]))
    out_k = 2 * MEAN_OUTPUT / (s_out + v_out)  # half the calls are samples, half values
    mcts = read_jsonl(data_file("lats", "programming_mcts_humaneval_gpt-3.5-turbo.jsonl"))
    refl = [len(r.get("reflections", [])) for r in mcts]
    return _Lats(questions, fewshot, _steps(refl), tuple(min(p, PAUSE_CAP) for p in pauses),
                 n_base * PROMPT_FACTOR, o_tok * PROMPT_FACTOR, s_out * out_k, v_out * out_k)


def _steps(reflections: list[int]) -> tuple[int, ...]:
    """Steps per program for each real problem: max(1, round(c * (1 + r))), c bisected for the mean."""
    target = MEAN_CALLS / (2 * WIDTH)
    r = np.array(reflections, dtype=float) + 1
    lo, hi = 0.0, 10 * target
    for _ in range(100):  # mean of the rounded sizes rises with c
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.maximum(1, np.rint(c * r)).mean() < target else (lo, c)
    return tuple(int(x) for x in np.maximum(1, np.rint(hi * r)))


def generate(n_programs: int, rate: float, seed: int) -> list[ProgramSpec]:
    """`n_programs` tree-search programs with Poisson arrivals at `rate`/s, reproducible from `seed`."""
    check_args(n_programs, rate)
    arrival_rng, rng = rngs(seed)
    arrivals = poisson_arrivals(arrival_rng, n_programs, rate)
    lats = _lats()
    steps = [lats.steps[i] for i in rng.integers(0, len(lats.steps), n_programs).tolist()]
    questions = rng.integers(0, len(lats.questions), n_programs).tolist()
    n = sum(steps) * WIDTH
    base = token_counts(rng, lats.base, SIGMA, n_programs, 8192)
    s_out = token_counts(rng, lats.sample_out, SIGMA, n, 2048)
    v_out = token_counts(rng, lats.value_out, SIGMA, n, 2048)
    obs = token_counts(rng, lats.obs, SIGMA, n, 4096)
    pauses = [lats.pauses[i] for i in rng.integers(0, len(lats.pauses), n).tolist()]
    u_term = rng.random(sum(steps)).tolist()
    u_pick = rng.random(sum(steps)).tolist()

    programs: list[ProgramSpec] = []
    k = 0  # position in the per-call arrays (step-major, thread-minor)
    s_all = 0  # position in the per-step arrays
    for p in range(n_programs):
        q = lats.questions[questions[p]]
        root_text = f"{lats.fewshot}\nQuestion: {q}\n"
        calls: list[CallSpec] = []
        # Unexpanded children: (sample call index, depth, trajectory tokens = prompt + output + obs).
        frontier: list[tuple[int, int, int]] = []
        node: tuple[int | None, int, int] = (None, 0, base[p])  # the root: no producing call
        values: tuple[int, ...] = ()
        for _ in range(steps[p]):
            parent, depth, prompt = node
            first = len(calls)
            for i in range(WIDTH):
                calls.append(CallSpec(prompt, s_out[k + i], i, values, 0.0, parent,
                                      root_text if parent is None else None, "sample"))
            children = []
            for i in range(WIDTH):
                traj = prompt + s_out[k + i] + obs[k + i]
                # Value prompt: a value few-shot base (same size as the sample base) + the trajectory.
                calls.append(CallSpec(traj, v_out[k + i], i, (first + i,), pauses[k + i], None, q, "value"))
                children.append((first + i, depth + 1, traj))
            values = tuple(range(first + WIDTH, first + 2 * WIDTH))
            k += WIDTH
            pick, term = u_pick[s_all], u_term[s_all]
            s_all += 1
            # Child j is the one the rollout follows (best value) or the one that reached Finish[...];
            # the fractional part of pick * WIDTH is a second uniform for choosing a stored node.
            j, pick = int(pick * WIDTH), pick * WIDTH % 1.0
            if depth + 1 < MAX_DEPTH:  # children at the depth limit are never expanded
                frontier.extend(children[:j] + children[j + 1:])
            if depth + 1 < MAX_DEPTH and term >= P_TERMINAL:  # the rollout goes on from child j
                node = children[j]
            else:  # terminal or depth limit: the next iteration expands a stored node
                # Every step below the limit stores 4 children, so the frontier is empty only in corner
                # cases; then the search restarts from the root.
                node = frontier.pop(int(pick * len(frontier))) if frontier else (None, 0, base[p])
        programs.append(ProgramSpec(f"{KIND}-{p:06d}", KIND, arrivals[p], tuple(calls)))
    return programs
