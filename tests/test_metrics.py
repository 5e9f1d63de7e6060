"""Serving metrics: distributions, sustainable rate under a latency target, throughput at equal latency."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from autellix.bench.metrics import (latency_target, summarize, sustainable_rate,
                                    throughput_at_equal_latency)
from autellix.bench.report import compare, format_comparisons, format_table, plot_latency, write_json


@dataclass
class P:
    latency: float | None
    jct: float | None


@dataclass
class C:
    ttft: float | None
    tpot: float | None
    wait: float = 0.0
    preemptions: int = 0
    swaps: int = 0


def test_summarize_skips_missing_values():
    s = summarize([P(1.0, 10.0), P(3.0, 30.0), P(None, None)], [C(0.5, 0.1, 1.0, 2, 1), C(1.5, None)])
    assert s.programs == 3 and s.mean_latency == 2.0 and s.mean_jct == 20.0
    assert s.mean_ttft == 1.0 and s.mean_tpot == pytest.approx(0.1)
    assert s.preemptions_per_call == 1.0 and s.swaps_per_call == 0.5 and s.mean_wait == 0.5
    assert math.isnan(summarize([], []).mean_latency)


def test_sustainable_rate_interpolates_the_first_crossing():
    rates, lat = [1, 2, 3, 4], [0.01, 0.02, 0.04, 0.08]
    assert sustainable_rate(rates, lat, 0.03).rate == pytest.approx(2.5)
    assert sustainable_rate(rates, lat, 0.02).rate == pytest.approx(2.0)
    top = sustainable_rate(rates, lat, 1.0)
    assert top.rate == 4 and top.censored
    low = sustainable_rate(rates, lat, 0.001)
    assert low.rate == 0 and low.below
    # unsorted input and NaN (nothing finished) past the knee
    assert sustainable_rate([3, 1, 2], [math.nan, 0.01, 0.02], 0.05).rate == 2


def test_throughput_at_equal_latency_ratio_and_bounds():
    rates = [1, 2, 3, 4]
    c = throughput_at_equal_latency(rates, [0.01, 0.011, 0.02, 0.05], [0.01, 0.03, 0.06, 0.1], 0.03)
    assert c.rate_b == pytest.approx(2.0) and c.rate_a == pytest.approx(3 + 1 / 3)
    assert c.ratio == pytest.approx(c.rate_a / c.rate_b) and c.bound == ""
    c = throughput_at_equal_latency(rates, [0.01] * 4, [0.01, 0.03, 0.06, 0.1], 0.03)
    assert c.bound == ">=" and c.ratio == pytest.approx(2.0)
    assert latency_target(rates, [0.02, 0.01, 0.5, 1.0], 5) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        latency_target([], [], 5)
    with pytest.raises(ValueError):
        sustainable_rate([1, 2], [0.1], 0.2)


def test_report_compare_table_json_and_plot(tmp_path):
    rows = [{"policy": p, "rate": r, "mean_latency": l, "p95_latency": 2 * l}
            for p, lat in (("fcfs", [0.01, 0.03, 0.09]), ("autellix", [0.01, 0.015, 0.04]))
            for r, l in zip([1, 2, 3], lat)]
    comps = compare(rows, "fcfs", multiples=(3.0,))
    assert len(comps) == 1 and comps[0]["system"] == "autellix"
    assert comps[0]["rate_b"] == pytest.approx(2.0) and comps[0]["ratio"] == pytest.approx(1.3)
    assert "autellix vs fcfs" in format_comparisons(comps)
    assert "mean_latency" in format_table(rows, ["policy", "rate", "mean_latency"]).splitlines()[0]
    write_json(tmp_path / "r.json", {"x": math.inf, "y": math.nan, "rows": rows})
    assert '"inf"' in (tmp_path / "r.json").read_text() and "NaN" not in (tmp_path / "r.json").read_text()
    plot_latency(rows, tmp_path / "p.png", title="t", targets={"mean_latency": 0.02}, target_label="2x fcfs")
    assert (tmp_path / "p.png").stat().st_size > 1000
