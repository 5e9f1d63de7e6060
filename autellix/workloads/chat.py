"""Chat programs with ShareGPT statistics: multi-turn conversations with cumulative history.

Paper targets (docs/workloads.md): 6.66 calls/program (long tail, max 80), 256 prompt and 277 output tokens
per call. We read the 256 as the NEW user text of each call, not the full prompt: with cumulative history
turn k's full prompt holds every earlier turn's input and 277-token reply, so a mean FULL prompt of 256
is impossible (already turn 2 exceeds 277). The full prompt (`prompt_tokens`) is therefore
`previous prompt + previous output + new turn`, with `prefix_call` = the previous turn.

Structure: turns per program from a lognormal rounded up to integers, truncated at 80, mean exactly 6.66
(sampling.discrete_lognormal_pmf). Each turn's user text is a real ShareGPT first prompt (500 in
shared/data/sharegpt); a share of programs open with a real two-turn MT-Bench question instead (40 of
them; share proportional to the sources' sizes). New-prompt lengths are the texts' real GPT-2 token
counts times one factor that makes the per-call mean exactly 256, so the length distribution keeps
ShareGPT's real shape. Replies are not in the data file (it holds first prompts only), so output lengths
are lognormal with mean 277. Calls follow each other back to back: user think time is left out, as in the
paper's replay (tool_pause = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from autellix.workloads.data import count_tokens, data_file, read_json, read_jsonl
from autellix.workloads.sampling import (
    check_args,
    discrete_lognormal_pmf,
    poisson_arrivals,
    rngs,
    token_counts,
)
from autellix.workloads.spec import CallSpec, ProgramSpec

KIND = "chat"
MEAN_CALLS = 6.66
MAX_CALLS = 80
CALLS_SIGMA = 1.0  # log-space spread of turns per program: median ~3.5 turns, a tail out to 80
MEAN_NEW_PROMPT = 256.0
MEAN_OUTPUT = 277.0
OUTPUT_SIGMA = 0.8
OUTPUT_CAP = 4096


@dataclass(frozen=True, slots=True)
class _ChatPool:
    """Real user texts with token counts already multiplied by `factor` (each >= 1)."""

    texts: tuple[str, ...]
    tokens: tuple[int, ...]
    mt_turns: tuple[tuple[str, str], ...]
    mt_tokens: tuple[tuple[int, int], ...]
    mt_share: float
    factor: float


@lru_cache(maxsize=1)
def _pool() -> _ChatPool:
    rows = read_json(data_file("sharegpt", "ShareGPT_V3_filtered_500.json"))
    texts = [r["conversations"][0]["value"] for r in rows if r.get("conversations")]
    mt = [tuple(q["turns"][:2]) for q in read_jsonl(data_file("mt_bench", "question_dev.jsonl"))]
    mt = [t for t in mt if len(t) == 2]
    raw = count_tokens(texts)
    raw_mt = count_tokens([t for pair in mt for t in pair])
    share = len(mt) / (len(mt) + len(texts))
    # Fraction q of CALLS that are MT-Bench turns: an MT program contributes min(N, 2) of its N turns.
    pmf = np.array(discrete_lognormal_pmf(MEAN_CALLS, CALLS_SIGMA, MAX_CALLS))
    ks = np.arange(1, MAX_CALLS + 1)
    q = share * float(pmf @ np.minimum(ks, 2)) / MEAN_CALLS
    factor = MEAN_NEW_PROMPT / (q * float(np.mean(raw_mt)) + (1 - q) * float(np.mean(raw)))
    # Rounding and the >=1 floor move the mean by well under 1%.
    scaled = tuple(max(1, round(t * factor)) for t in raw)
    scaled_mt = [max(1, round(t * factor)) for t in raw_mt]
    return _ChatPool(
        texts=tuple(texts),
        tokens=scaled,
        mt_turns=tuple((a, b) for a, b in mt),
        mt_tokens=tuple(zip(scaled_mt[0::2], scaled_mt[1::2])),
        mt_share=share,
        factor=factor,
    )


def generate(n_programs: int, rate: float, seed: int) -> list[ProgramSpec]:
    """`n_programs` chat programs with Poisson arrivals at `rate`/s, reproducible from `seed`."""
    check_args(n_programs, rate)
    arrival_rng, rng = rngs(seed)
    arrivals = poisson_arrivals(arrival_rng, n_programs, rate)
    pool = _pool()
    pmf = discrete_lognormal_pmf(MEAN_CALLS, CALLS_SIGMA, MAX_CALLS)
    turns = (rng.choice(MAX_CALLS, size=n_programs, p=pmf) + 1).tolist()
    total = sum(turns)
    text_idx = rng.integers(0, len(pool.texts), total).tolist()
    outputs = token_counts(rng, MEAN_OUTPUT, OUTPUT_SIGMA, total, OUTPUT_CAP)
    use_mt = (rng.random(n_programs) < pool.mt_share).tolist()
    mt_idx = rng.integers(0, len(pool.mt_turns), n_programs).tolist()

    programs: list[ProgramSpec] = []
    pos = 0
    for p in range(n_programs):
        calls: list[CallSpec] = []
        history = 0  # tokens of all earlier turns' prompts and replies = this turn's prefix
        for k in range(turns[p]):
            if use_mt[p] and k < 2:
                text, new = pool.mt_turns[mt_idx[p]][k], pool.mt_tokens[mt_idx[p]][k]
            else:
                text, new = pool.texts[text_idx[pos]], pool.tokens[text_idx[pos]]
            out = outputs[pos]
            pos += 1
            calls.append(
                CallSpec(
                    prompt_tokens=history + new,
                    output_tokens=out,
                    depends_on=(k - 1,) if k else (),
                    prefix_call=k - 1 if k else None,
                    prompt_text=text,
                    role="turn",
                )
            )
            history += new + out
        programs.append(ProgramSpec(f"{KIND}-{p:06d}", KIND, arrivals[p], tuple(calls)))
    return programs
