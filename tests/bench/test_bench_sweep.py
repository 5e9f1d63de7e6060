"""The sweep over several targets: failing targets reported, interleaving, reproducibility with a seed."""

from __future__ import annotations

import argparse
import asyncio
import math

import pytest
from fake_openai import ServeFake  # tests/bench/ is on sys.path (conftest.py)

from autellix.bench.plan import BenchOutput, BenchPlan, plan_from_args, run_order
from autellix.bench.sweep import run_bench
from autellix.bench.targets import Target, parse_target


def _plan(targets: list[Target], seed: int = 0, **kw: object) -> BenchPlan:
    settings = dict(workload="chat", targets=targets, rates=[20.0, 40.0], counts=[3, 3], seed=seed,
                    scale=0.05, tokenizer="gpt2", cooldown=0.0)
    settings.update(kw)
    return BenchPlan(**settings)  # type: ignore[arg-type]


def _run(plan: BenchPlan) -> BenchOutput:
    return asyncio.run(run_bench(plan, progress=False))


def test_failing_targets_are_reported_without_sinking_the_run(serve_fake: ServeFake, dead_url: str) -> None:
    good, good_url = serve_fake()
    _, broken_url = serve_fake(fail_status=503)
    targets = [parse_target(f"good={good_url}"), parse_target(f"broken={broken_url}"),
               parse_target(f"dead={dead_url}")]
    out = _run(_plan(targets))
    rows = {(r["policy"], r["rate"]): r for r in out.rows}
    assert len(rows) == 6
    for rate in (20.0, 40.0):
        ok = rows[("good", rate)]
        assert ok["completed_programs"] == 3 and ok["failed_programs"] == 0
        assert math.isfinite(ok["mean_latency"]) and ok["mean_latency"] > 0
        broken = rows[("broken", rate)]
        assert broken["failed_programs"] == 3 and any("HTTP 503" in e for e in broken["errors"])
        dead = rows[("dead", rate)]
        assert dead["failed_programs"] == 3 and any("unreachable" in e for e in dead["errors"])
    assert out.targets["dead"].error and "connection" in out.targets["dead"].error
    from autellix.workloads import generate

    calls_per_rate = sum(p.num_calls for p in generate("chat", 3, 1.0, 0, 0.05))
    assert len(good.requests) == 2 * calls_per_rate  # the good target got every call at both rates


def test_same_seed_sends_the_same_calls_to_every_target_and_every_rerun(serve_fake: ServeFake) -> None:
    a, a_url = serve_fake()
    b, b_url = serve_fake()
    targets = [parse_target(f"a={a_url}"), parse_target(f"b={b_url}")]
    _run(_plan(targets, seed=7))
    first_a = [(s.body["prompt"], s.body["max_tokens"]) for s in a.requests]
    first_b = [(s.body["prompt"], s.body["max_tokens"]) for s in b.requests]
    assert sorted(first_a) == sorted(first_b)  # both targets saw the very same calls
    a.requests.clear()
    _run(_plan(targets[:1], seed=7))
    assert sorted((s.body["prompt"], s.body["max_tokens"]) for s in a.requests) == sorted(first_a)
    a.requests.clear()
    _run(_plan(targets[:1], seed=8))
    assert sorted((s.body["prompt"], s.body["max_tokens"]) for s in a.requests) != sorted(first_a)


def test_each_run_has_its_own_program_ids_and_cache_salt(serve_fake: ServeFake) -> None:
    fake, url = serve_fake()
    _run(_plan([parse_target(f"x={url}")]))
    salts = {s.body["cache_salt"] for s in fake.requests}
    tags = {s.headers["x-program-id"].split(":")[0] for s in fake.requests}
    assert len(salts) == 2 and salts == tags  # one per rate point


def test_one_program_count_per_rate_replays_a_prefix(serve_fake: ServeFake) -> None:
    fake, url = serve_fake()
    out = _run(_plan([parse_target(f"x={url}")], counts=[2, 4]))
    rows = [(r["rate"], r["programs"], r["completed_programs"]) for r in out.rows]
    assert rows == [(20.0, 2, 2), (40.0, 4, 4)]
    by_run: dict[str, list[tuple[str, int]]] = {}
    for s in fake.requests:
        by_run.setdefault(s.body["cache_salt"], []).append((s.body["prompt"], s.body["max_tokens"]))
    small, large = sorted(by_run.values(), key=len)
    assert len(small) < len(large) and set(small) <= set(large)  # the 2 programs are 2 of the 4


def test_plan_keeps_each_count_with_its_rate() -> None:
    args = argparse.Namespace(workload="chat", target=["x=http://127.0.0.1:1"], rates=[0.9, 0.1, 0.3],
                              programs="80,20,30", seed=0, scale=0.1, model=None, tokenizer=None,
                              timeout=5.0, cooldown=0.0, no_cache_salt=False, no_identity=False)
    plan = plan_from_args(args)
    assert (plan.rates, plan.counts) == ([0.1, 0.3, 0.9], [20, 30, 80])
    with pytest.raises(ValueError, match="one per rate"):
        plan_from_args(argparse.Namespace(**{**vars(args), "programs": "20,30"}))


def test_run_order_alternates() -> None:
    ts = [Target("a", "http://x"), Target("b", "http://y")]
    assert [t.name for t in run_order(ts, 0)] == ["a", "b"]
    assert [t.name for t in run_order(ts, 1)] == ["b", "a"]
