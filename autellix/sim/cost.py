"""Calibrated step-time predictor for the simulator (Vidur-style execution-time model).

    step_time = roofline(M) + dec_ctx * sum(decode contexts)          M = decode seqs + prefill tokens
              + prefill_attn(chunks) + all_reduce(M) + swap + overhead
    roofline(M)       = max(mem0 + mem1*M, comp0 + comp1*M)
    prefill_attn      = max(pf_floor, pf0 + sum_i pf1*n_i + pf2*n_i*(n_i + 2*c_i)) (chunk: n_i new, c_i prior)

The memory-bound line (weights streamed once per step) and dec_ctx (KV read per context token) are fitted
jointly on CUDA-graph decode steps; the compute-bound line on the eager `linear` table above the decode batch
sizes, where launch overhead is a few percent. The prefill term counts causal attention pairs: a chunk of n
tokens after c cached ones scores n*c + n^2/2 pairs, so chunking a prompt costs the same as prefilling it
whole. See docs/cost-model.md for fit quality and limits.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autellix.sim import hardware as hw

BLOCK_TOKENS = 16


def kv_capacity_tokens(gpu_mem_GB: float, weight_GB: float, kv_bytes_per_token: float,
                       utilization: float = 0.9, block_tokens: int = BLOCK_TOKENS) -> int:
    """KV-cache tokens that fit in `utilization` of GPU memory after weights, rounded down to whole blocks."""
    free_GB = gpu_mem_GB * utilization - weight_GB
    if kv_bytes_per_token <= 0 or free_GB <= 0:
        raise ValueError(f"no room for KV cache: {gpu_mem_GB} GB x {utilization} - {weight_GB} GB weights")
    tokens = int(free_GB * 1e9 // kv_bytes_per_token)
    return tokens - tokens % block_tokens


@dataclass(frozen=True, slots=True)
class CostModel:
    """Fitted coefficients (seconds). Invariant: every coefficient that multiplies a token/block count is >= 0
    and mem0 > 0, so step_time is positive and non-decreasing in every argument."""
    mem0: float
    mem1: float
    comp0: float
    comp1: float
    dec_ctx: float
    pf_floor: float
    pf0: float
    pf1: float
    pf2: float
    swap_out_many: float  # per block (block_tokens tokens), all layers, K and V
    swap_out_batched: float
    swap_in_many: float
    swap_in_batched: float
    ar_fixed: float = 0.0  # tensor-parallel all-reduce: per step latency (0 when tp == 1) -- an estimate
    ar_per_token: float = 0.0
    overhead_s: float = 0.0  # CPU scheduling etc. per step; not in the profile, so 0 unless set
    request_overhead_s: float = 0.0
    """Per call, issue to scheduler (HTTP, tokenisation): a profile's measured `request_overhead_s`
    (`autellix calibrate` writes it; the GPU profiles time the engine alone, so 0)."""
    kv_capacity_tokens: int = 0  # per engine (with tp > 1 each GPU holds its shard of every token)
    block_tokens: int = BLOCK_TOKENS
    """The engine's KV block size (vLLM: 16 on GPU, 128 on CPU); prefix caching shares whole blocks."""
    tp: int = 1
    name: str = ""

    @property
    def kv_capacity_blocks(self) -> int:
        return self.kv_capacity_tokens // self.block_tokens

    def forward_time(self, tokens: int) -> float:
        """Non-attention cost of one step with `tokens` batched tokens (roofline + all-reduce); 0 for none."""
        if tokens <= 0:
            return 0.0
        mem = self.mem0 + self.mem1 * tokens
        comp = self.comp0 + self.comp1 * tokens
        return (mem if mem > comp else comp) + self.ar_fixed + self.ar_per_token * tokens

    def prefill_attn_time(self, prefill_chunks: Sequence[tuple[int, int]]) -> float:
        new = pairs = 0
        for n, c in prefill_chunks:
            new += n
            pairs += n * (n + 2 * c)
        if new <= 0:
            return 0.0
        t = self.pf0 + self.pf1 * new + self.pf2 * pairs
        return t if t > self.pf_floor else self.pf_floor

    def swap_time(self, blocks_out: int, blocks_in: int, batched: bool = True) -> float:
        if batched:
            return self.swap_out_batched * blocks_out + self.swap_in_batched * blocks_in
        return self.swap_out_many * blocks_out + self.swap_in_many * blocks_in

    def step_time(self, decode_seqs: int, decode_context_tokens: int,
                  prefill_chunks: Sequence[tuple[int, int]] = (), swap_blocks_out: int = 0,
                  swap_blocks_in: int = 0, batched_swap: bool = True) -> float:
        """Seconds for one engine step. Args are non-negative counts (not checked: this is the hot path).
        decode_context_tokens = sum over decode seqs of the tokens each attends to.
        A step with no tokens costs only its swaps (no forward pass is launched).
        Inlines forward_time, prefill_attn_time and swap_time (saves three calls per step; a test pins
        that the sum of those equals this)."""
        tokens = decode_seqs
        t = 0.0
        if prefill_chunks:
            new = pairs = 0
            for n, c in prefill_chunks:
                new += n
                pairs += n * (n + 2 * c)
            if new > 0:
                tokens += new
                a = self.pf0 + self.pf1 * new + self.pf2 * pairs
                t = a if a > self.pf_floor else self.pf_floor
        if tokens > 0:
            mem = self.mem0 + self.mem1 * tokens
            comp = self.comp0 + self.comp1 * tokens
            t += ((mem if mem > comp else comp) + self.dec_ctx * decode_context_tokens
                  + self.ar_fixed + self.ar_per_token * tokens + self.overhead_s)
        if swap_blocks_out or swap_blocks_in:
            if batched_swap:
                t += self.swap_out_batched * swap_blocks_out + self.swap_in_batched * swap_blocks_in
            else:
                t += self.swap_out_many * swap_blocks_out + self.swap_in_many * swap_blocks_in
        return t

    def decode_run_time(self, steps: int, decode_seqs: int, decode_context_tokens: int) -> float:
        """Total time of `steps` consecutive decode-only steps; each step adds one token to every sequence,
        so the summed context grows by decode_seqs per step (closed form, for event fast-forward)."""
        if steps <= 0:
            return 0.0
        first = self.step_time(decode_seqs, decode_context_tokens)
        return steps * first + self.dec_ctx * decode_seqs * steps * (steps - 1) / 2

    def decode_steps_within(self, budget_s: float, decode_seqs: int, decode_context_tokens: int) -> int:
        """Largest k with decode_run_time(k, ...) <= budget_s (inverse of the closed form)."""
        first = self.step_time(decode_seqs, decode_context_tokens)
        if budget_s < first or first <= 0:
            return 0
        g = self.dec_ctx * decode_seqs / 2  # run_time(k) = g*k^2 + (first - g)*k
        b = first - g
        k = int(budget_s / b) if g <= 0 else int((-b + math.sqrt(b * b + 4 * g * budget_s)) / (2 * g))
        while k > 0 and self.decode_run_time(k, decode_seqs, decode_context_tokens) > budget_s:
            k -= 1  # float rounding of the root can overshoot by one
        while self.decode_run_time(k + 1, decode_seqs, decode_context_tokens) <= budget_s:
            k += 1
        return k


# ----------------------------------------------------------------------------------------------- fitting
def nnls_rel(X: np.ndarray, y: np.ndarray, signed: Sequence[int] = ()) -> np.ndarray:
    """argmin sum(((X@w - y)/y)^2) with w >= 0 except the columns in `signed`. Exact: tries every active set
    of the (few) constrained columns and keeps the best feasible one. Relative weighting because the
    simulator needs small relative error across steps that span 1000x in duration."""
    Xw, yw = X / y[:, None], np.ones_like(y)
    cons = [j for j in range(X.shape[1]) if j not in signed]
    best, best_r = np.zeros(X.shape[1]), math.inf
    for k in range(len(cons) + 1):
        for free in itertools.combinations(cons, k):
            cols = sorted(set(free) | set(signed))
            if not cols:
                continue
            w = np.zeros(X.shape[1])
            w[cols] = np.linalg.lstsq(Xw[:, cols], yw, rcond=None)[0]
            if (w[cons] < 0).any():
                continue
            r = float(((Xw @ w - yw) ** 2).sum())
            if r < best_r:
                best, best_r = w, r
    return best


def _fit_prefill(n: np.ndarray, s: np.ndarray) -> tuple[float, float, float, float]:
    """max(floor, p0 + p1*n + p2*n^2): small prompts are launch-bound (flat), long ones quadratic. Try the
    polynomial on the points above each candidate knee and keep the best mean relative error over all."""
    floor = float(s.min())
    best, best_e = (floor, 0.0, 0.0, 0.0), math.inf
    for k in range(len(n) - 2):
        X = np.stack([np.ones_like(n[k:]), n[k:], n[k:] ** 2], 1)
        p = nnls_rel(X, s[k:])
        pred = np.maximum(floor, p[0] + p[1] * n + p[2] * n ** 2)
        e = float(np.mean(np.abs(pred - s) / s))
        if e < best_e:
            best, best_e = (floor, float(p[0]), float(p[1]), float(p[2])), e
    return best


def fit_cost_model(profile: dict, key: str, gpu: hw.GPU | None, gpu_mem_GB: float, tp: int = 1,
                   decode_column: str = "graph_s", utilization: float = 0.9, overhead_s: float = 0.0,
                   name: str = "") -> CostModel:
    """Fit a CostModel to model entry `key` of a parsed calibration file (validated here)."""
    e = hw.validate_entry(profile, key, decode_column)
    lin = np.array([[r["M"], r["s"]] for r in e["linear"]], float)
    dec = np.array([[r["B"], r["L"], r[decode_column]] for r in e["decode"]], float)
    pre = np.array([[r["n"], r["attn_s"]] for r in e["prefill"]], float)
    B, L, G = dec.T
    # Compute-bound line from eager points beyond the decode batch sizes (>= 2 points; intercept may be < 0).
    big = lin[lin[:, 0] > B.max()]
    big = big if len(big) >= 2 else lin[np.argsort(lin[:, 0])][-2:]
    comp0, comp1 = nnls_rel(np.stack([np.ones(len(big)), big[:, 0]], 1), big[:, 1], signed=(0,))
    # Decode steps: G = mem0 + mem1*B + dec_ctx*B*L (all >= 0), fitted on the memory-bound rows only; rows
    # whose batch is already compute-bound under the current fit are dropped and the fit repeated.
    X = np.stack([np.ones_like(B), B, B * L], 1)
    keep = np.ones(len(B), bool)
    for _ in range(5):
        mem0, mem1, dec_ctx = nnls_rel(X[keep], G[keep])
        nxt = mem0 + mem1 * B >= comp0 + comp1 * B
        if nxt.sum() < 3 or (nxt == keep).all():
            break
        keep = nxt
    pf_floor, pf0, pf1, pf2 = _fit_prefill(pre[:, 0], pre[:, 1])
    block = int(e.get("block_tokens", BLOCK_TOKENS))
    if block < 1:
        raise ValueError(f"calibration: {key}.block_tokens must be >= 1, got {block}")
    sw = e["swap"]
    # Per engine block: the profile's swap copies moved `blocks` blocks of `bytes` in all (16 tokens each
    # when `bytes` is absent); copy time scales with bytes.
    swapped_tokens = float(sw["bytes"]) / float(e["kv_bytes_per_token"]) if "bytes" in sw \
        else BLOCK_TOKENS * float(sw["blocks"])
    nb = swapped_tokens / block
    out_many, out_b, in_b = sw["many_small_s"] / nb, sw["gather_one_copy_s"] / nb, sw["h2d_one_copy_s"] / nb
    ar_fixed = ar_tok = 0.0
    if tp > 1:  # 2 all-reduces per layer of M x D bf16; ring moves 2(tp-1)/tp of it per GPU. An ESTIMATE.
        cfg = e["config"]
        g = gpu or hw.CUSTOM_GPU
        bw = min(g.nvlink_GBps, profile["ceilings"]["copy_GBps"] / 2) * 1e9  # copy ceiling counts read+write
        ar_fixed = 2 * cfg["L"] * g.allreduce_latency_s
        ar_tok = 2 * cfg["L"] * (2 * (tp - 1) / tp) * cfg["D"] * 2 / bw
    return CostModel(
        mem0=float(mem0), mem1=float(mem1), comp0=float(comp0), comp1=float(comp1), dec_ctx=float(dec_ctx),
        pf_floor=pf_floor, pf0=pf0, pf1=pf1, pf2=pf2,
        # Per-block H2D copies were not measured; they are latency-bound like the D2H ones, so reuse those.
        swap_out_many=out_many, swap_out_batched=out_b, swap_in_many=max(out_many, in_b),
        swap_in_batched=in_b,
        ar_fixed=ar_fixed, ar_per_token=ar_tok, overhead_s=overhead_s,
        request_overhead_s=float(profile.get("request_overhead_s", 0.0)),
        kv_capacity_tokens=kv_capacity_tokens(gpu_mem_GB, e["weight_GB"], e["kv_bytes_per_token"],
                                              utilization, block),
        block_tokens=block, tp=tp, name=name or key)


def load_cost_model(hardware: str | None = None, model: str = "llama3.1-8b", *,
                    path: str | Path | None = None, gpu_mem_GB: float | None = None,
                    utilization: float = 0.9, decode_column: str = "graph_s",
                    overhead_s: float = 0.0) -> CostModel:
    """Preset (`hardware` in hw.GPUS, `model` in hw.MODELS; default h200) or a user's calibration file
    (`path`, same format as shared/calibration/*.json). For a file, `model` may be a preset name or the
    file's entry name; GPU memory comes from `gpu_mem_GB`, else a top-level `gpu_mem_GB` field, else
    `hardware`, else the file's `device` string; tensor parallelism from a `-tpN-shard` entry name."""
    if decode_column not in ("graph_s", "eager_s"):
        raise ValueError(f"decode_column must be 'graph_s' or 'eager_s', not {decode_column!r}")
    gpu = hw.gpu_preset(hardware) if hardware is not None else None
    if path is None:
        gpu = gpu or hw.gpu_preset("h200")
        preset = hw.model_preset(model)
        profile = hw.read_profile(hw.find_calibration_file(gpu.profile_file))
        key, tp, mem = preset.profile_key, preset.tp, gpu_mem_GB or gpu.mem_GB
    else:
        profile = hw.read_profile(path)
        key = hw.MODELS[model.lower()].profile_key if model.lower() in hw.MODELS else model
        tp = hw.tp_from_key(key)
        gpu = gpu or hw.gpu_for_device(str(profile.get("device", "")))
        mem = gpu_mem_GB or profile.get("gpu_mem_GB") or (gpu.mem_GB if gpu else None)
        if not mem:
            raise ValueError(f"GPU memory unknown for {path}: pass gpu_mem_GB, hardware, or add 'gpu_mem_GB'")
    name = f"{gpu.name if gpu else 'custom'}/{model}"
    return fit_cost_model(profile, key, gpu, float(mem), tp, decode_column, utilization, overhead_s, name)


def fit_points(profile: dict, key: str, cm: CostModel,
               decode_column: str = "graph_s") -> dict[str, list[tuple[str, float, float]]]:
    """(label, measured, predicted) per calibration point and component, for error reports and plots.
    Shard-only quantities: all-reduce is excluded since the profile does not include it.
    `linear` = eager points above the decode batch sizes (where the compute line is used); `linear_small`
    = eager points at decode batch sizes, launch-bound, shown for reference (decode steps cover that
    range)."""
    e = profile[key]
    bmax = max(r["B"] for r in e["decode"])

    def roof(m: float) -> float:  # shard-only non-attention cost (no all-reduce: not in the profile)
        return max(cm.mem0 + cm.mem1 * m, cm.comp0 + cm.comp1 * m)

    out: dict[str, list[tuple[str, float, float]]] = {"linear": [], "linear_small": [], "decode": [],
                                                      "prefill": [], "swap": []}
    for r in e["linear"]:
        out["linear" if r["M"] > bmax else "linear_small"].append((f"M={r['M']}", r["s"], roof(r["M"])))
    for r in e["decode"]:
        out["decode"].append((f"B={r['B']},L={r['L']}", r[decode_column],
                              roof(r["B"]) + cm.dec_ctx * r["B"] * r["L"]))
    for r in e["prefill"]:
        out["prefill"].append((f"n={r['n']}", r["attn_s"], cm.prefill_attn_time([(r["n"], 0)])))
    sw, nb = e["swap"], e["swap"]["blocks"]
    for f, pred in (("many_small_s", cm.swap_time(nb, 0, False)), ("gather_one_copy_s", cm.swap_time(nb, 0)),
                    ("h2d_one_copy_s", cm.swap_time(0, nb))):
        out["swap"].append((f, sw[f], pred))
    return out


def relative_errors(points: list[tuple[str, float, float]]) -> tuple[float, float]:
    """(mean, max) of |predicted - measured| / measured."""
    errs = [abs(p - m) / m for _, m, p in points]
    return (sum(errs) / len(errs), max(errs)) if errs else (0.0, 0.0)
