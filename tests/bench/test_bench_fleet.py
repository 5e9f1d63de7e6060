"""The closed-loop replay (`autellix bench --concurrency`) against the FAKE upstream: N programs in flight,
the next starting when one ends, program-end notices, steady-state figures, the command's JSON and plot."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fake_openai import ServeFake  # tests/bench/ is on sys.path (conftest.py)

from autellix.bench.driver import ReplayOptions, RunResult, replay_closed
from autellix.bench.prompts import PromptBuilder
from autellix.bench.targets import Target
from autellix.cli import main
from autellix.metrics import closed_loop
from autellix.workloads import generate


def _closed(url: str, n: int, stop_after: int, builder: PromptBuilder, programs: int = 12) -> RunResult:
    async def go() -> RunResult:
        async with httpx.AsyncClient() as client:
            opts = ReplayOptions(model="fake-model", run_tag="t0", cache_salt="t0", salt_per_program=True)
            specs = generate("chat", programs, 1.0, seed=1, scale=0.3)  # multi-turn, no pauses: quick
            return await replay_closed(client, Target("fake", url), specs, n, stop_after, builder, opts)
    return asyncio.run(go())


def test_keeps_n_programs_in_flight_and_ends_each_one(serve_fake: ServeFake, builder: PromptBuilder) -> None:
    fake, url = serve_fake(decode_step=0.0005)
    result = _closed(url, 3, 5, builder)
    assert result.concurrency == 3 and not result.aborted
    done = [p for p in result.programs if p.ok]
    assert len(done) >= 5
    calls = [s for s in fake.requests if not s.body["vllm_xargs"].get("autellix_end")]
    spans: dict[str, list[float]] = {}
    for s in calls:
        span = spans.setdefault(s.body["vllm_xargs"]["autellix_program"], [s.start, s.end or s.start])
        span[0], span[1] = min(span[0], s.start), max(span[1], s.end or s.start)
    edges = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()])
    running = peak = 0
    for _, d in edges:
        running += d
        peak = max(peak, running)
    assert peak == 3  # the fleet is full, never over
    ends = {s.body["vllm_xargs"]["autellix_program"] for s in fake.requests
            if s.body["vllm_xargs"].get("autellix_end")}
    assert ends == {f"t0:{p.program}" for p in result.programs}  # every program that ended said so
    salts = {s.body["vllm_xargs"]["autellix_program"]: s.body["cache_salt"] for s in calls}
    assert len(set(salts.values())) == len(salts)  # no KV shared across programs
    figures = closed_loop(done, [c for c in result.calls if not c.error])
    assert figures["calls_per_min"] > 0 and figures["prefix_hit_share"] > 0
    later = [c.cached_tokens > 0 for c in result.calls if c.call]
    assert sum(later) >= 0.9 * len(later)  # later turns find their history (bar a clipped, windowed one)
    assert all(c.cached_tokens == 0 for c in result.calls if not c.call)


def test_the_command_writes_every_run_and_the_ratios(
        serve_fake: ServeFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, slow = serve_fake(decode_step=0.002)
    _, fast = serve_fake(decode_step=0.0005)
    out, plot = tmp_path / "fleet.json", tmp_path / "fleet.png"
    code = main(["bench", "--workload", "chat", "--target", f"slow={slow}", "--target", f"fast={fast}",
                 "--concurrency", "2,3", "--programs", "3", "--repeats", "2", "--scale", "0.02",
                 "--tokenizer", "gpt2", "--cooldown", "0", "--json", str(out), "--plot", str(plot)])
    assert code == 0 and plot.stat().st_size > 0
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 8 and len(data["results"]) == 4
    assert {(r["policy"], r["concurrency"]) for r in data["results"]} == {
        (p, c) for p in ("slow", "fast") for c in (2, 3)}
    for row in data["results"]:
        cpm = row["calls_per_min"]
        assert row["repeats"] == 2 and row["calls_per_min_min"] <= cpm <= row["calls_per_min_max"]
    ratios = {(c["metric"], c["concurrency"]): c["ratio"] for c in data["comparisons"]}
    assert ratios[("calls_per_min", 2)] > 1  # fast over slow
    assert data["config"]["working_set_fit"] > 0 and data["calls"] and data["program_records"]
    assert "calls per min" in capsys.readouterr().out


def test_the_command_rejects_a_closed_loop_without_a_steady_state(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--workload", "coding", "--target", "a=http://127.0.0.1:1", "--concurrency", "2",
                 "--programs", "1", "--json", str(tmp_path / "x.json")]) == 2
    assert "completion count >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--workload", "coding", "--target", "a=http://x", "--concurrency", "2", "--rates", "1",
              "--programs", "3", "--json", "x"])
