"""Benchmark targets: named OpenAI-compatible endpoints, parsed from `NAME=URL` and probed once.

The probe asks `GET /v1/models` for the served model name, the model's path (vLLM's `root`, which tells the
replay which tokenizer to size prompts with) and `max_model_len` (so calls that would overflow the
context are clipped the same way for every target). A target that does not answer is not an error here:
the caller reports it and the other targets still run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Target:
    """A named endpoint. Invariant: `base_url` has a scheme, no trailing slash and no trailing `/v1`."""

    name: str
    base_url: str

    @property
    def completions_url(self) -> str:
        return f"{self.base_url}/v1/completions"


@dataclass(frozen=True)
class TargetInfo:
    """What the probe learned; `error` is set (and the rest unknown) when the target did not answer."""

    model: str | None = None
    root: str | None = None
    max_model_len: int | None = None
    error: str | None = None


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        url = "http://" + url
    return url[: -len("/v1")] if url.endswith("/v1") else url


def parse_target(spec: str) -> Target:
    """`NAME=URL` (a bare URL is named after its port, e.g. `8101`)."""
    name, sep, url = spec.partition("=")
    if not sep:
        url = spec
        m = re.search(r":(\d+)", spec.split("//")[-1])
        name = m.group(1) if m else "target"
    if not _NAME.match(name) or not url:
        raise ValueError(f"bad --target {spec!r}: expected NAME=URL, NAME of letters, digits, '_', '-', '.'")
    return Target(name, normalize_url(url))


def parse_targets(specs: list[str]) -> list[Target]:
    targets = [parse_target(s) for s in specs]
    names = [t.name for t in targets]
    if not targets:
        raise ValueError("at least one --target NAME=URL is needed")
    if len(set(names)) != len(names):
        raise ValueError(f"target names must be distinct, got {names}")
    return targets


def describe_error(exc: BaseException) -> str:
    """One short line for an HTTP failure, naming what went wrong rather than a traceback."""
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed ({exc or 'refused'})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"


async def probe(client: httpx.AsyncClient, target: Target, timeout: float = 10.0) -> TargetInfo:
    """`GET /v1/models` once; never raises (failure goes into `TargetInfo.error`)."""
    try:
        r = await client.get(f"{target.base_url}/v1/models", timeout=timeout)
        r.raise_for_status()
        models = r.json().get("data") or []
    except (httpx.HTTPError, ValueError) as exc:
        return TargetInfo(error=describe_error(exc))
    if not models:
        return TargetInfo(error="GET /v1/models listed no model")
    m = models[0]
    max_len = m.get("max_model_len")
    return TargetInfo(model=m.get("id"), root=m.get("root"), max_model_len=int(max_len) if max_len else None)


COUNTERS = ("vllm:num_preemptions_total", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")


def parse_counters(text: str, names: tuple[str, ...] = COUNTERS) -> dict[str, float]:
    """Sum each named counter over its label sets in Prometheus text (absent names are left out)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            try:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return out


async def engine_counters(client: httpx.AsyncClient, target: Target) -> dict[str, float]:
    """vLLM's preemption and prefix-cache counters from `GET /metrics` ({} when not a vLLM engine)."""
    try:
        r = await client.get(f"{target.base_url}/metrics", timeout=10.0)
        return parse_counters(r.text) if r.status_code == 200 else {}
    except httpx.HTTPError:
        return {}
