"""GET /metrics: Prometheus text exposition from a per-app registry.

Per-call cost is kept to dict increments and one histogram observation; gauges (engine load and health,
table size, step-time estimates, vLLM's preemption counters) are read from live state at scrape time.

Metric names:
  autellix_engine_healthy{engine,url}            1 if the engine passes health checks
  autellix_engine_active_calls{engine}           calls in flight on the engine
  autellix_engine_step_seconds{engine}           estimated engine step (inter-token) time
  autellix_engine_preemptions_total{engine}      vLLM's preemption counter on that engine (when scraped)
  autellix_programs_active                       programs in the process table
  autellix_calls_active                          calls in flight through the gateway
  autellix_calls_total{engine,endpoint,level}    calls sent, by entry level of the program's service
  autellix_call_errors_total{engine,status}      failed calls (engine 4xx/5xx, 502 from the gateway)
  autellix_service_total{engine}                 service charged, decode-token equivalents
  autellix_programs_ended_total{how}             programs that left the table: ended|expired|anonymous
  autellix_call_duration_seconds{endpoint}       histogram: gateway-observed call latency
  autellix_program_duration_seconds              histogram: program creation -> last call completion
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autellix.gateway.sessions import Sessions
from autellix.gateway.upstreams import UpstreamPool
from autellix.programs import ProgramState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
_PROGRAM_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


class GatewayMetrics(Collector):
    def __init__(self, pool: UpstreamPool, sessions: Sessions) -> None:
        self.pool = pool
        self.sessions = sessions
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.service: dict[str, float] = {}
        self.ended: Counter[str] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.call_latency = Histogram("autellix_call_duration_seconds", "Call latency seen by the gateway",
                                      ["endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.program_latency = Histogram("autellix_program_duration_seconds",
                                         "Program duration: creation to last call completion",
                                         buckets=_PROGRAM_BUCKETS, registry=self.registry)

    # -- per-call hooks (cheap) ----------------------------------------------------------------------

    def call_sent(self, engine: str, endpoint: str, level: int) -> None:
        self.calls[(engine, endpoint, str(level))] += 1

    def call_done(self, engine: str, endpoint: str, seconds: float, service: float) -> None:
        self.service[engine] = self.service.get(engine, 0.0) + service
        self.call_latency.labels(endpoint).observe(seconds)

    def call_failed(self, engine: str, status: int) -> None:
        self.errors[(engine, str(status))] += 1

    def program_ended(self, program: ProgramState, how: str) -> None:
        self.ended[how] += 1
        if program.completed_calls and program.last_completion >= program.created:
            self.program_latency.observe(program.last_completion - program.created)

    # -- scrape --------------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        engines = self.pool.upstreams
        healthy = GaugeMetricFamily("autellix_engine_healthy", "1 if the engine passes health checks",
                                    labels=["engine", "url"])
        active = GaugeMetricFamily("autellix_engine_active_calls", "Calls in flight on the engine",
                                   labels=["engine"])
        step = GaugeMetricFamily("autellix_engine_step_seconds", "Estimated engine step time",
                                 labels=["engine"])
        preempt = CounterMetricFamily("autellix_engine_preemptions", "vLLM preemptions on the engine",
                                      labels=["engine"])
        for e in engines:
            healthy.add_metric([e.name, e.url], float(e.load.healthy))
            active.add_metric([e.name], e.load.active)
            if e.step_time is not None:
                step.add_metric([e.name], e.step_time)
            if e.preemptions is not None:
                preempt.add_metric([e.name], e.preemptions)
        yield from (healthy, active, step, preempt)
        yield GaugeMetricFamily("autellix_programs_active", "Programs in the process table",
                                value=len(self.sessions))
        yield GaugeMetricFamily("autellix_calls_active", "Calls in flight through the gateway",
                                value=sum(e.load.active for e in engines))
        yield _counter("autellix_calls", "Calls sent to engines", ["engine", "endpoint", "level"],
                       self.calls)
        yield _counter("autellix_call_errors", "Failed calls", ["engine", "status"], self.errors)
        yield _counter("autellix_service", "Service charged (decode-token equivalents)", ["engine"],
                       {(k,): v for k, v in self.service.items()})
        yield _counter("autellix_programs_ended", "Programs that left the table", ["how"],
                       {(k,): v for k, v in self.ended.items()})

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _counter(name: str, doc: str, labels: list[str], values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family
