"""Serving metrics shared by the simulator and the real benchmark (docs/bench.md, 'Metrics').

Per program: latency per generated token = (completion - arrival) / all output tokens of the program, in
s/token. Completion is the program's last token, so for a multi-threaded program the time is its critical
path while the tokens are all of its threads' (the paper's definition). Program completion time (JCT) =
completion - arrival. Both summarised as mean / P50 / P95 / P99.
Per call: TTFT, TPOT (time per output token after the first), queueing wait, preemptions, swaps.

Throughput at equal latency (the paper's headline): for each system, the highest arrival rate whose mean
latency stays under a target, linearly interpolated between the last sweep point under the target and
the first one over it; the ratio of two systems' rates is the gain. The target is a multiple of the
lowest-load latency (`latency_target`): near-zero load measures the engine, not the scheduler.

Backlog growth (is a point past capacity?): past capacity the queue grows for as long as programs
arrive, so a finite run's mean latency there depends on its length, and "sustained" means nothing.
`backlog_growth` = (work to do at the last arrival - work to do at the middle of the arrival window) /
work that arrived in between, work being output tokens. It is about 0 while the system keeps up (the
backlog fluctuates around its Little's-law level) and about 1 - capacity / rate past capacity, whatever
order the policy serves in (counting programs instead would favour orders that leave the largest ones
behind). Near capacity heavy-tailed workloads fluctuate slowly: a few hundredths either way is noise. The
window's middle is used so the warm-up from an empty engine is over; that holds when programs last well
under half the window (thousands of simulated programs). In a run of a few dozen programs that last
about as long as half the window, the warm-up alone shows up as growth.

Inputs are duck-typed: anything with `latency` and `jct` (programs) or `ttft`, `tpot` (calls) works, so
the real benchmark's records (bench/records.py) and the simulator's (sim/result.py) share this code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

PERCENTILES = (50, 95, 99)
MIN_HALF = 20
"""Fewest programs arriving in the second half of the window for `backlog_growth` to mean anything."""


class ProgramLike(Protocol):
    @property
    def latency(self) -> float | None: ...
    @property
    def jct(self) -> float | None: ...


class CallLike(Protocol):
    @property
    def ttft(self) -> float | None: ...
    @property
    def tpot(self) -> float | None: ...


def _clean(values: Iterable[float | None]) -> np.ndarray:
    """Finite values only (failed programs and one-token calls have None)."""
    arr = np.array([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def distribution(values: Iterable[float | None], prefix: str) -> dict[str, float]:
    """{prefix_mean, prefix_p50, prefix_p95, prefix_p99}; NaN when there are no values."""
    arr = _clean(values)
    out = {f"{prefix}_mean": float(arr.mean()) if arr.size else math.nan}
    for q in PERCENTILES:
        out[f"{prefix}_p{q}"] = float(np.percentile(arr, q)) if arr.size else math.nan
    return out


@dataclass(frozen=True, slots=True)
class Summary:
    """One (system, rate) point. Latencies in s/token, times in seconds."""

    programs: int
    mean_latency: float
    p50_latency: float
    p95_latency: float
    p99_latency: float
    mean_jct: float
    p95_jct: float
    p99_jct: float
    mean_ttft: float
    p95_ttft: float
    mean_tpot: float
    p95_tpot: float
    mean_wait: float
    preemptions_per_call: float
    swaps_per_call: float
    backlog_growth: float = math.nan

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(programs: Sequence[ProgramLike], calls: Sequence[CallLike] = ()) -> Summary:
    """Program and call distributions of one run. `calls` may carry `wait`, `preemptions`, `swaps`."""
    lat = distribution((p.latency for p in programs), "latency")
    jct = distribution((p.jct for p in programs), "jct")
    ttft = distribution((c.ttft for c in calls), "ttft")
    tpot = distribution((c.tpot for c in calls), "tpot")
    n = max(len(calls), 1)
    return Summary(
        programs=len(programs),
        mean_latency=lat["latency_mean"], p50_latency=lat["latency_p50"],
        p95_latency=lat["latency_p95"], p99_latency=lat["latency_p99"],
        mean_jct=jct["jct_mean"], p95_jct=jct["jct_p95"], p99_jct=jct["jct_p99"],
        mean_ttft=ttft["ttft_mean"], p95_ttft=ttft["ttft_p95"],
        mean_tpot=tpot["tpot_mean"], p95_tpot=tpot["tpot_p95"],
        mean_wait=float(np.mean([getattr(c, "wait", 0.0) for c in calls])) if calls else math.nan,
        preemptions_per_call=sum(getattr(c, "preemptions", 0) for c in calls) / n,
        swaps_per_call=sum(getattr(c, "swaps", 0) for c in calls) / n,
        backlog_growth=backlog_growth(programs, calls) if calls else math.nan,
    )


def backlog_growth(programs: Sequence[ProgramLike], calls: Sequence[CallLike]) -> float:
    """Share of the work that arrived in the second half of the arrival window and was still to do at the
    last arrival, net of the work to do at the window's middle (module docstring). Work is output tokens:
    a program brings all of its own on arrival, a call takes its own away when it finishes (a call in
    progress counts as not started, a bias bounded by the engine's seats). Programs need `arrival`,
    `finish` and `output_tokens`, calls `program`, `finished` and `completion_tokens` or `output_tokens`,
    all on one clock; failed programs and their calls are left out. NaN when fewer than MIN_HALF
    programs arrive in the second half."""
    ok = {p.program: p for p in programs if getattr(p, "finish", None) is not None}
    if len(ok) < 2 * MIN_HALF:
        return math.nan
    arrival = np.array([p.arrival for p in ok.values()], dtype=float)
    brought = np.array([p.output_tokens for p in ok.values()], dtype=float)
    done = [(c.finished, getattr(c, "completion_tokens", None) or c.output_tokens) for c in calls
            if c.program in ok and c.finished is not None]
    finished, taken = (np.array(x, dtype=float) for x in zip(*done)) if done else (np.zeros(0),) * 2
    mid, end = (arrival.min() + arrival.max()) / 2, arrival.max()

    def to_do(t: float) -> float:
        return float(brought[arrival <= t].sum() - taken[finished <= t].sum())

    second = arrival > mid
    if second.sum() < MIN_HALF:
        return math.nan
    return (to_do(end) - to_do(mid)) / float(brought[second].sum())


# -- throughput at equal latency -------------------------------------------------------------------------

def latency_target(rates: Sequence[float], latencies: Sequence[float], multiple: float) -> float:
    """`multiple` x the latency at the lowest swept rate (the unloaded engine's speed)."""
    if not rates or len(rates) != len(latencies):
        raise ValueError("latency_target: need equally long, non-empty rates and latencies")
    if not multiple > 1:
        raise ValueError(f"latency_target: multiple must be > 1, got {multiple}")
    return multiple * latencies[int(np.argmin(rates))]


@dataclass(frozen=True, slots=True)
class Sustainable:
    """Highest rate under the target. `censored`: the whole sweep stays under it (rate is a lower
    bound); `below`: even the lowest rate exceeds it (rate is 0)."""

    rate: float
    censored: bool = False
    below: bool = False


def sustainable_rate(rates: Sequence[float], latencies: Sequence[float], target: float) -> Sustainable:
    """Walk the sweep in rate order; interpolate where mean latency first crosses `target`."""
    if not rates or len(rates) != len(latencies):
        raise ValueError("sustainable_rate: need equally long, non-empty rates and latencies")
    pts = sorted(zip(rates, latencies))
    if not pts[0][1] <= target:
        return Sustainable(0.0, below=True)
    for (r0, l0), (r1, l1) in zip(pts, pts[1:]):
        if not l1 <= target:  # NaN (nothing finished) counts as over the target
            if not math.isfinite(l1) or l1 == l0:
                return Sustainable(r0)
            return Sustainable(r0 + (target - l0) * (r1 - r0) / (l1 - l0))
    return Sustainable(pts[-1][0], censored=True)


@dataclass(frozen=True, slots=True)
class Comparison:
    """System A vs baseline B at one latency target. `ratio` = rate_a / rate_b; `bound`: '>=' or '<='
    when a censored or zero rate makes the ratio a bound, '' when exact."""

    target: float
    rate_a: float
    rate_b: float
    ratio: float
    bound: str

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def throughput_at_equal_latency(rates: Sequence[float], latencies_a: Sequence[float],
                                latencies_b: Sequence[float], target: float) -> Comparison:
    """Sustainable rate of A and of B under `target`, and their ratio (A's gain over B)."""
    a = sustainable_rate(rates, latencies_a, target)
    b = sustainable_rate(rates, latencies_b, target)
    if b.rate == 0:
        ratio = math.inf if a.rate > 0 else math.nan
    else:
        ratio = a.rate / b.rate
    bound = ""
    if (a.censored and not b.censored) or (b.below and not a.below):
        bound = ">="
    elif (b.censored and not a.censored) or (a.below and not b.below):
        bound = "<="
    elif a.censored and b.censored:
        bound = "?"
    return Comparison(target, a.rate, b.rate, ratio, bound)


# -- closed loop -----------------------------------------------------------------------------------------

WARMUP_SHARE = 0.2
"""Closed loop: the first 20% of program completions are the warm-up (every program starts at once)."""


def mixed_closed_loop(programs: Sequence[Any], calls: Sequence[Any]) -> dict[str, float]:
    """A batch fleet (closed loop) beside an interactive stream (open loop), each class apart: the
    fleet's `closed_loop` figures over the stream's span (from its first arrival on), and the interactive
    programs' completion times and their calls' time to first token (`interactive_jct_*`,
    `interactive_ttft_*`). Programs need `batch` (their class), `program`, `arrival`, `finish`, `jct`;
    calls `program`, `finished`, `ttft` and what `closed_loop` reads."""
    interactive = [p for p in programs if not p.batch]
    if not interactive:
        raise ValueError("mixed_closed_loop: no interactive program completed")
    start = min(p.arrival for p in interactive)
    names = {p.program for p in interactive}
    fleet = [p for p in programs if p.batch and p.finish > start]
    fleet_calls = [c for c in calls
                   if c.program not in names and c.finished is not None and c.finished > start]
    own = [c for c in calls if c.program in names]
    jct = distribution((p.jct for p in interactive), "jct")
    ttft = distribution((c.ttft for c in own), "ttft")
    return {**closed_loop(fleet, fleet_calls, warmup=0.0), "interactive_programs": len(interactive),
            **{f"interactive_{k}": v for k, v in (jct | ttft).items()}}


def closed_loop(programs: Sequence[Any], calls: Sequence[Any],
                warmup: float = WARMUP_SHARE) -> dict[str, float]:
    """Steady-state figures of a closed-loop run (N programs in flight, the next starts when one ends).

    The window runs from the completion that ends the warm-up (the ceil(warmup x n)-th) to the last
    one; programs and calls finishing inside it count. Programs need `finish` and `jct`; calls need
    `finished`, `prompt_tokens` and may carry `hit_tokens` (prompt tokens the prefix cache served),
    `prefill_tokens` (prompt tokens computed, recomputation included) and `new_prompt_tokens` (what an
    infinite cache would have computed). Throughput is over the window's length, so the start-up from an
    empty engine and a sweep's last, cut-off programs do not count.
    """
    finishes = sorted(p.finish for p in programs)
    if len(finishes) < 2:
        raise ValueError(f"closed_loop: need at least 2 completed programs, got {len(finishes)}")
    k = min(max(math.ceil(warmup * len(finishes)), 1), len(finishes) - 1)
    t0, t1 = finishes[k - 1], finishes[-1]
    span = t1 - t0
    done = [p for p in programs if t0 < p.finish <= t1]
    window = [c for c in calls if c.finished is not None and t0 < c.finished <= t1]
    jct = distribution((p.jct for p in done), "jct")
    prompt = sum(c.prompt_tokens for c in window)
    hits = sum(getattr(c, "hit_tokens", 0) or 0 for c in window)
    return {
        "window_s": span, "programs_done": len(done), "calls_done": len(window),
        "programs_per_hour": len(done) / span * 3600 if span > 0 else math.nan,
        "calls_per_min": len(window) / span * 60 if span > 0 else math.nan,
        "mean_jct": jct["jct_mean"], "p95_jct": jct["jct_p95"],
        "prompt_tokens": prompt,
        "prefill_tokens": sum(getattr(c, "prefill_tokens", 0) or 0 for c in window),
        "new_prompt_tokens": sum(getattr(c, "new_prompt_tokens", 0) or 0 for c in window),
        "prefix_hit_share": hits / prompt if prompt else math.nan,
    }
