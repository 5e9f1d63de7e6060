"""Seeded randomness shared by the generators: Poisson arrivals, calibrated length distributions.

Reproducibility contract: every generator derives two independent streams from its seed, one for arrival
times and one for program structure. Arrivals are standard exponentials divided by the rate, so the same
seed at different rates yields the very same programs with arrival times scaled by 1/rate (common random
numbers across a rate sweep). Structure draws are vectorised per workload (one numpy call per quantity),
which keeps generating 10,000 programs fast.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np


def check_args(n_programs: int, rate: float) -> None:
    """Reject counts and rates no Poisson process can have, naming the bad value."""
    if isinstance(n_programs, bool) or not isinstance(n_programs, (int, np.integer)) or n_programs <= 0:
        raise ValueError(f"n_programs must be a positive integer, got {n_programs!r}")
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive finite number of programs/s, got {rate!r}")


def rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(arrival stream, structure stream), independent and fixed by `seed`."""
    a, s = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(s)


def poisson_arrivals(rng: np.random.Generator, n: int, rate: float) -> list[float]:
    """n arrival times (s) of a Poisson process at `rate`/s, starting after one inter-arrival gap."""
    return (np.cumsum(rng.standard_exponential(n)) / rate).tolist()


def lognormal(rng: np.random.Generator, mean: float, sigma: float, size: int) -> np.ndarray:
    """Lognormal draws with the given arithmetic mean (not median) and log-space sigma."""
    mu = math.log(mean) - sigma * sigma / 2
    return rng.lognormal(mu, sigma, size)


def token_counts(rng: np.random.Generator, mean: float, sigma: float, size: int, cap: int) -> list[int]:
    """Integer token counts in [1, cap], lognormal with (about) the given mean; the cap is far in the tail."""
    x = np.rint(lognormal(rng, mean, sigma, size))
    return np.clip(x, 1, cap).astype(np.int64).tolist()


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@cache
def discrete_lognormal_pmf(mean: float, sigma: float, max_value: int) -> tuple[float, ...]:
    """pmf over 1..max_value: a lognormal rounded up to integers, truncated at max_value, and shifted in
    log space (bisection on mu) so its mean is exactly `mean`. A long tail that never exceeds the max."""
    if not 1 < mean < max_value:
        raise ValueError(f"mean {mean} must lie strictly between 1 and {max_value}")

    def pmf(mu: float) -> np.ndarray:
        edges = [0.0] + [_norm_cdf((math.log(k) - mu) / sigma) for k in range(1, max_value + 1)]
        p = np.diff(np.array(edges))
        return p / p.sum()

    ks = np.arange(1, max_value + 1)
    lo, hi = -10.0, math.log(max_value) + 10.0
    for _ in range(200):  # the truncated mean rises monotonically with mu
        mid = (lo + hi) / 2
        if float(pmf(mid) @ ks) < mean:
            lo = mid
        else:
            hi = mid
    return tuple(pmf((lo + hi) / 2).tolist())
