"""The upstream pool: the gateway's view of each vLLM engine it forwards to (an `Upstream`: address,
health, load for the balancer, step-time estimate), and the choice of one for a call.

"Upstream" is the gateway's word for an engine endpoint; the engine itself (vLLM with the Autellix
plugin) is autellix.engine, and its process is deployment's (autellix.deploy). The names shown to
clients and in metrics stay "engine-<i>".

Invariants:
- `Upstream.load.active` counts calls the gateway has in flight on that engine; the proxy increments it
  before sending and decrements it in a `finally`, so it returns to 0 whatever happens to a call.
- An engine is picked only while `load.healthy`. Health flips to False on a failed /health probe or on a
  connection failure of a call (at once, so the next call already avoids it) and back to True on the
  next good probe: a restarted engine rejoins within one `health_interval`.
- The balancer (autellix.balance) re-pins a program whose pinned engine is unhealthy.

HTTP client: one aiohttp ClientSession (keep-alive pool) shared by all engines. httpx was measured first
and dropped: its pool scans every connection on each request, so with hundreds of calls in flight the
gateway fell to ~90 calls/s on 2 cores (aiohttp: ~2,200 calls/s, same setup; scripts/bench_gateway.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence

import aiohttp

from autellix.balance import Balancer, EngineLoad, NoHealthyEngine, least_used
from autellix.context import end_notice
from autellix.programs import ProgramState

log = logging.getLogger("autellix.gateway")

_PREEMPTIONS = re.compile(rb"^vllm:num_preemptions(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)
_CACHE_INFO = re.compile(rb"^vllm:cache_config_info\{(.*)\}\s+\S+\s*$", re.M)
_LABEL = re.compile(rb'(\w+)="((?:[^"\\]|\\.)*)"')
_STEP_ALPHA = 0.2  # EWMA weight of a new step-time sample: recent enough to follow load, smooth enough


class Upstream:
    """One vLLM engine as the gateway sees it (index i: `engine-<i>`, for good)."""

    def __init__(self, index: int, url: str) -> None:
        self.index = index
        self.url = url
        """Base URL; "" while the address is not known yet (an engine Ray is still placing)."""
        self.retired = False
        """Removed from the pool (scaled down): never probed or picked again; its index stays taken."""
        self.name = f"engine-{index}"
        self.load = EngineLoad(index, healthy=False, active=0)
        self.step_time: float | None = None
        """Estimated seconds per engine step (decode inter-token time), EWMA; None until observed."""
        self.preemptions: float | None = None
        """vLLM's own preemption counter, scraped from the engine's /metrics; None if unknown."""
        self.kv_tokens: int | None = None
        """The engine's KV cache in tokens (`kv_capacity` of its /metrics); None until read. Kept while
        the engine is down: a restarted engine comes back with the same cache."""
        self.last_error: str | None = None
        self.model: str | None = None
        """The engine's served model name, read from /v1/models when first needed."""

    def __repr__(self) -> str:
        return f"{self.name} ({self.url})"

    def observe_step(self, seconds: float, exact: bool) -> None:
        """Fold a step-time sample in. `exact` samples come from streams (time between tokens);
        non-exact ones (latency / tokens, an upper bound) only seed an engine with no estimate yet."""
        if not seconds > 0:
            return
        if self.step_time is None:
            self.step_time = seconds
        elif exact:
            self.step_time += _STEP_ALPHA * (seconds - self.step_time)

    def wait_steps(self, latency: float, completion_tokens: int) -> float:
        """Time of a call not spent producing its tokens (queueing, prefill, preemption), in steps.
        Zero until the engine has a step-time estimate."""
        step = self.step_time
        if not step:
            return 0.0
        return round(max(0.0, latency / step - completion_tokens), 3)


class UpstreamPool:
    """All upstreams, their health loop, and the choice of one for a call. `open()` (inside the event
    loop) creates the HTTP session; `close()` ends it."""

    def __init__(self, urls: Sequence[str], balancer: Balancer, health_interval: float = 1.0,
                 health_timeout: float = 2.0, metrics_interval: float = 5.0) -> None:
        self.upstreams = [Upstream(i, url) for i, url in enumerate(urls)]
        self.loads = [e.load for e in self.upstreams]
        self.balancer = balancer
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.metrics_interval = metrics_interval
        self.on_scraped: Callable[[], None] | None = None
        """Called after each round of metrics scrapes (the pause gate rereads the KV capacity)."""
        self._session: aiohttp.ClientSession | None = None

    async def open(self, connect_timeout: float, read_timeout: float | None, max_connections: int,
                   keepalive: float) -> None:
        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=keepalive,
                                         ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        # No proxies from the environment, no transparent decompression: bytes are relayed as sent.
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                              auto_decompress=False, skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("engine pool is not open")
        return self._session

    def __len__(self) -> int:
        return len(self.upstreams)

    @property
    def healthy_count(self) -> int:
        return sum(e.load.healthy for e in self.upstreams)

    def pick(self, program: ProgramState, prompt_tokens: int,
             exclude: frozenset[int] = frozenset()) -> Upstream:
        """The engine for a call; raises NoHealthyEngine. `exclude`: engines that just failed to
        connect for this call (skipped even if their health flag has not caught up)."""
        return self.upstreams[self.balancer.pick(program, prompt_tokens, self._loads(exclude))]

    def _loads(self, exclude: frozenset[int]) -> list[EngineLoad]:
        """The balancer's view: excluded upstreams count as unhealthy for this call."""
        if not exclude:
            return self.loads
        return [EngineLoad(x.index, x.healthy and x.index not in exclude, x.active) for x in self.loads]

    def pick_any(self, exclude: frozenset[int] = frozenset()) -> Upstream:
        """Least-used healthy engine, for calls outside any program (/v1/models, pass-through);
        raises NoHealthyEngine. `exclude` as for `pick`."""
        return self.upstreams[least_used(self._loads(exclude))]

    def add(self, url: str = "") -> Upstream:
        """A new engine, unhealthy until its first good probe. Indices only grow, so program pins and
        metric labels never point at another engine."""
        upstream = Upstream(len(self.upstreams), url)
        self.upstreams.append(upstream)
        self.loads.append(upstream.load)
        return upstream

    def move(self, upstream: Upstream, url: str) -> None:
        """The engine now answers at `url` (restarted elsewhere): unhealthy until probed there."""
        if url != upstream.url:
            log.info("%r moves to %s", upstream, url or "(unknown)")
            upstream.url, upstream.model = url, None
            self.mark_failed(upstream, "address changed" if url else "restarting")

    def retire(self, upstream: Upstream) -> None:
        upstream.retired = True
        self.mark_failed(upstream, "retired")

    def mark_failed(self, upstream: Upstream, error: str) -> None:
        if upstream.load.healthy:
            log.warning("%r marked unhealthy: %s", upstream, error)
        upstream.load.healthy = False
        upstream.last_error = error

    async def probe(self, upstream: Upstream) -> bool:
        """One /health check; updates the engine's flag and returns it."""
        if upstream.retired or not upstream.url:
            return False
        try:
            async with self.session.get(upstream.url + "/health", timeout=self._probe_timeout()) as resp:
                await resp.read()
                ok, error = resp.status == 200, f"/health answered {resp.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok and not upstream.load.healthy:
            log.info("%r is healthy", upstream)
        if ok:
            upstream.load.healthy, upstream.last_error = True, None
        else:
            self.mark_failed(upstream, error)
        return ok

    def _probe_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.health_timeout)

    async def probe_all(self) -> int:
        results = await asyncio.gather(*(self.probe(e) for e in self.upstreams))
        return sum(results)

    def kv_capacity(self) -> int | None:
        """The KV cache, in tokens, of the engines in the pool (retired ones left out); None while no
        engine has reported its own."""
        known = [e.kv_tokens for e in self.upstreams if not e.retired and e.kv_tokens is not None]
        return sum(known) if known else None

    async def scrape_all(self) -> None:
        """Scrape every healthy engine's /metrics once, then tell `on_scraped`."""
        await asyncio.gather(*(self.scrape_metrics(e) for e in self.upstreams if e.load.healthy))
        if self.on_scraped is not None:
            self.on_scraped()

    async def scrape_metrics(self, upstream: Upstream) -> None:
        """Read vLLM's preemption counter and KV capacity (best effort: what an engine does not report
        stays as it was)."""
        try:
            async with self.session.get(upstream.url + "/metrics", timeout=self._probe_timeout()) as resp:
                text = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError):
            return
        if status == 200:
            values = [float(m) for m in _PREEMPTIONS.findall(text)]
            if values:
                upstream.preemptions = sum(values)
            upstream.kv_tokens = kv_capacity(text) or upstream.kv_tokens

    async def end_program(self, program_id: str) -> int:
        """Tell every healthy engine that the program ended (a program-end notice:
        autellix.context.end_notice), so each releases the KV it holds for it at once. Best effort and
        concurrent; returns how many engines accepted it."""
        results = await asyncio.gather(*(self._notify_end(e, program_id) for e in self.upstreams
                                         if e.load.healthy))
        return sum(results)

    async def _notify_end(self, upstream: Upstream, program_id: str) -> bool:
        timeout = self._probe_timeout()
        try:
            if upstream.model is None:
                async with self.session.get(upstream.url + "/v1/models", timeout=timeout) as resp:
                    upstream.model = str((await resp.json(content_type=None))["data"][0]["id"])
            body = {"model": upstream.model, **end_notice(program_id)}
            url = upstream.url + "/v1/completions"
            async with self.session.post(url, json=body, timeout=timeout) as resp:
                await resp.read()
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, KeyError, IndexError, TypeError, ValueError) as exc:
            log.debug("%r: program-end notice for %s failed: %s", upstream, program_id, exc)
            return False

    async def run_health_loop(self) -> None:
        """Probe every engine each `health_interval`; scrape metrics each `metrics_interval`."""
        loop = asyncio.get_running_loop()
        next_scrape = loop.time()
        while True:
            await asyncio.sleep(self.health_interval)
            await self.probe_all()
            if self.metrics_interval and loop.time() >= next_scrape:
                next_scrape = loop.time() + self.metrics_interval
                await self.scrape_all()


def kv_capacity(metrics: bytes) -> int | None:
    """An engine's KV cache in tokens from its Prometheus text: `num_gpu_blocks` x `block_size` of vLLM's
    `vllm:cache_config_info` gauge (labels: every CacheConfig field; one line per engine core, each
    carrying the endpoint's total blocks, so the largest line, not their sum). The rule ThunderAgent's
    proxy uses (its backend/vllm_metrics.py). None when absent (`--disable-log-stats`) or unset."""
    best = None
    for labels in _CACHE_INFO.findall(metrics):
        fields = dict(_LABEL.findall(labels))
        blocks, size = fields.get(b"num_gpu_blocks", b""), fields.get(b"block_size", b"")
        if blocks.isdigit() and size.isdigit() and int(blocks) * int(size) > 0:
            best = max(best or 0, int(blocks) * int(size))
    return best


__all__ = ["NoHealthyEngine", "Upstream", "UpstreamPool", "kv_capacity"]
