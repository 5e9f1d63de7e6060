"""`autellix calibrate`: measure a real engine's step costs through its OpenAI API.

What is measured (the engine must be otherwise idle; every request carries a fresh `cache_salt`, so no
prefix-cache hit shortens a prefill):
- prefill: one request at a time with an n-token prompt and 1 output token; its TTFT is one prefill step
  plus the per-request overhead (HTTP, tokenisation, scheduling). Median of `repeats`.
- decode: B concurrent requests with L-token prompts and `decode_tokens` outputs each. In the window
  where all B streams have their first token and none has finished, every engine step is a pure decode
  step of batch B, and each stream receives one chunk per step, so the chunk gaps are the step time.
- request overhead: TTFT of the shortest prompt minus the B=1 decode step at the shortest context (a
  step of a few tokens costs about the same as a one-token decode step).

`calibration_file.py` turns these numbers into the simulator's calibration format.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from autellix.bench.client import StreamedCompletion, completion_body, stream_completion
from autellix.bench.prompts import PromptBuilder
from autellix.bench.targets import Target

DEFAULT_PREFILL = (16, 64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_BATCHES = (1, 2, 4, 8)
DEFAULT_CONTEXTS = (128, 512, 2048)


@dataclass(frozen=True)
class PrefillPoint:
    n: int
    ttft_s: float


@dataclass(frozen=True)
class DecodePoint:
    B: int
    L: int  # mean context of the sequences during the measured window
    step_s: float


@dataclass(frozen=True)
class Measurements:
    prefill: list[PrefillPoint]
    decode: list[DecodePoint]

    @property
    def request_overhead_s(self) -> float:
        small = min(self.prefill, key=lambda p: p.n)
        one = [d for d in self.decode if d.B == 1] or self.decode
        step = min(one, key=lambda d: d.L).step_s
        return max(0.0, small.ttft_s - step)


class CalibrationError(RuntimeError):
    """The engine failed a measurement request (message says which and why)."""


class Prober:
    """Sends measurement requests to one engine; prompts are sized with the engine's tokenizer."""

    def __init__(self, client: httpx.AsyncClient, target: Target, model: str, builder: PromptBuilder,
                 timeout: float = 600.0) -> None:
        self.client, self.target, self.model = client, target, model
        self.builder, self.timeout = builder, timeout

    async def request(self, n_prompt: int, n_out: int, times: bool = False) -> StreamedCompletion:
        salt = uuid.uuid4().hex  # fresh salt: never a prefix-cache hit
        text, _ = await asyncio.to_thread(self.builder.build, "", n_prompt, None, salt)
        body = completion_body(self.model, text, n_out, None, "0", cache_salt=salt)
        out = await stream_completion(self.client, self.target.completions_url, body, {}, self.timeout,
                                      keep_chunk_times=times)
        if out.error:
            raise CalibrationError(f"{self.target.base_url}: {n_prompt}-token prompt failed: {out.error}")
        return out

    async def prefill(self, n: int, repeats: int) -> PrefillPoint:
        ttfts = []
        for _ in range(repeats):
            o = await self.request(n, 1)
            assert o.first_token is not None
            ttfts.append(o.first_token - o.sent)
        return PrefillPoint(n, statistics.median(ttfts))

    async def decode(self, B: int, L: int, tokens: int) -> DecodePoint:
        outs = await asyncio.gather(*(self.request(L, tokens, times=True) for _ in range(B)))
        return DecodePoint(B, L + tokens // 2, decode_step_from_streams([o.chunk_times for o in outs]))


def decode_step_from_streams(streams: Sequence[Sequence[float]]) -> float:
    """Step time from the chunk times of concurrent streams: mean chunk gap inside the window where all
    streams are decoding (after the last first chunk, before the first last chunk). Falls back to every
    gap when the window holds fewer than two chunks of any stream."""
    start = max(s[0] for s in streams)
    end = min(s[-1] for s in streams)
    rates = []
    for s in streams:
        inside = [t for t in s if start <= t <= end]
        if len(inside) >= 3:
            rates.append((inside[-1] - inside[0]) / (len(inside) - 1))
    if rates:
        return statistics.median(rates)
    gaps = [b - a for s in streams for a, b in zip(s, s[1:])]
    if not gaps:
        raise CalibrationError("decode measurement produced no token gaps (outputs of one token?)")
    return statistics.median(gaps)


async def measure(prober: Prober, prefill_lengths: Sequence[int], batches: Sequence[int],
                  contexts: Sequence[int], decode_tokens: int = 32, repeats: int = 3,
                  max_model_len: int | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> Measurements:
    """Run every measurement, one at a time (each needs the engine to itself)."""
    limit = (max_model_len or 1 << 30) - decode_tokens - 8
    await prober.request(16, 4)  # warm-up: first request pays one-off costs (graph capture, allocation)
    prefill: list[PrefillPoint] = []
    for n in sorted(set(prefill_lengths)):
        if n <= limit:
            prefill.append(await prober.prefill(n, repeats))
            progress(f"prefill n={n}: TTFT {prefill[-1].ttft_s * 1e3:.1f} ms")
    decode: list[DecodePoint] = []
    for L in sorted(set(contexts)):
        for B in sorted(set(batches)):
            if L <= limit:
                decode.append(await prober.decode(B, L, decode_tokens))
                progress(f"decode B={B} L={L}: step {decode[-1].step_s * 1e3:.1f} ms")
    if len(prefill) < 3 or len(decode) < 3:
        raise CalibrationError(f"too few points fit max_model_len={max_model_len}: need 3 prefill lengths "
                               f"and 3 decode points; pass smaller --prefill-lengths / --contexts")
    return Measurements(prefill, decode)
