"""A batch fleet beside an interactive stream on real endpoints (`replay_mixed`, `autellix bench
--concurrency ... --interactive W`) against the FAKE upstream: classes on the wire, when the stream
starts, when the run ends, the fleet running dry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fake_openai import Seen, ServeFake  # tests/bench/ is on sys.path (conftest.py)

from autellix.bench.driver import FleetRanDry, ReplayOptions, RunResult, replay_mixed
from autellix.bench.prompts import PromptBuilder
from autellix.bench.targets import Target
from autellix.cli import main
from autellix.metrics import mixed_closed_loop
from autellix.workloads import generate, interactive_stream

N, M = 3, 4


def _mixed(url: str, builder: PromptBuilder, fleet: int = 300, rate: float = 20.0) -> RunResult:
    async def go() -> RunResult:
        async with httpx.AsyncClient() as client:
            opts = ReplayOptions(model="fake-model", run_tag="t0", cache_salt="t0", salt_per_program=True)
            programs = generate("chat", fleet, 1.0, seed=1, scale=0.3)  # multi-turn, no pauses: quick
            stream = interactive_stream("chat", M, rate, seed=1, scale=0.3)
            return await replay_mixed(client, Target("fake", url), programs, N, stream, builder, opts)
    return asyncio.run(go())


def _calls(fake_requests: list[Seen]) -> list[Seen]:
    return [s for s in fake_requests if not s.body["vllm_xargs"].get("autellix_end")]


def _interactive(s: Seen) -> bool:
    return s.body["vllm_xargs"]["autellix_program"].startswith("t0:i-")


def test_a_mixed_run_ends_with_the_stream_and_splits_the_classes(
        serve_fake: ServeFake, builder: PromptBuilder) -> None:
    fake, url = serve_fake(decode_step=0.0005)
    result = _mixed(url, builder)
    assert not result.aborted and result.concurrency == N
    stream = [p for p in result.programs if not p.batch]
    fleet = [p for p in result.programs if p.batch]
    assert len(stream) == M and all(p.ok and p.program.startswith("i-") for p in stream)
    assert sum(p.ok for p in fleet) >= N and not any(p.program.startswith("i-") for p in fleet)
    assert result.wall_s < max(p.finish for p in stream) + 1.0  # the fleet is cut off with the stream's end
    ends = {s.body["vllm_xargs"]["autellix_program"] for s in fake.requests
            if s.body["vllm_xargs"].get("autellix_end")}
    assert {f"t0:{p.program}" for p in stream} <= ends  # interactive programs end as fleet ones do
    ok = [p for p in result.programs if p.ok]
    figures = mixed_closed_loop(ok, [c for c in result.calls if not c.error])
    assert figures["interactive_programs"] == M and figures["interactive_jct_p95"] > 0
    assert figures["interactive_ttft_p95"] > 0 and figures["programs_per_hour"] > 0


def test_fleet_calls_say_batch_and_interactive_calls_name_no_class(
        serve_fake: ServeFake, builder: PromptBuilder) -> None:
    fake, url = serve_fake(decode_step=0.0005)
    _mixed(url, builder)
    calls = _calls(fake.requests)
    fleet = [s for s in calls if not _interactive(s)]
    stream = [s for s in calls if _interactive(s)]
    assert fleet and stream
    assert all(s.headers.get("x-autellix-class") == "batch" for s in fleet)
    assert all(s.body["vllm_xargs"].get("autellix_class") == "batch" for s in fleet)
    assert not any("x-autellix-class" in s.headers for s in stream)
    assert not any("autellix_class" in s.body["vllm_xargs"] for s in stream)


def test_the_stream_starts_once_the_fleet_has_turned_over(
        serve_fake: ServeFake, builder: PromptBuilder) -> None:
    fake, url = serve_fake(decode_step=0.0005)
    result = _mixed(url, builder, rate=1000.0)  # every interactive arrival ~0 s after the stream starts
    turned = sorted(p.finish for p in result.programs if p.batch and p.ok)[N - 1]
    assert min(p.arrival for p in result.programs if not p.batch) >= turned
    calls = _calls(fake.requests)
    last_ends: dict[str, float] = {}
    for s in calls:
        if not _interactive(s) and s.end is not None:
            key = s.body["vllm_xargs"]["autellix_program"]
            last_ends[key] = max(last_ends.get(key, 0.0), s.end)
    nth_end = sorted(last_ends.values())[N - 1]
    assert min(s.start for s in calls if _interactive(s)) >= nth_end


def test_a_fleet_that_runs_dry_before_the_stream_ends_is_an_error(
        serve_fake: ServeFake, builder: PromptBuilder) -> None:
    _, url = serve_fake(decode_step=0.0005)
    with pytest.raises(FleetRanDry, match="draw more --programs"):
        _mixed(url, builder, fleet=N + 1, rate=0.2)  # the stream would last ~20 s, the fleet ~1 s


def _bench(*extra: str, targets: tuple[str, ...], out: Path) -> int:
    args = ["bench", "--workload", "chat", "--concurrency", "3", "--repeats", "1", "--scale", "0.1",
            "--tokenizer", "gpt2", "--cooldown", "0", "--json", str(out), *extra]
    for t in targets:
        args += ["--target", t]
    return main(args)


def test_the_command_reports_each_class(
        serve_fake: ServeFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, slow = serve_fake(decode_step=0.002)
    _, fast = serve_fake(decode_step=0.0005)
    out = tmp_path / "mix.json"
    code = _bench("--programs", "300", "--interactive", "chat", "--interactive-rate", "2",
                  "--interactive-programs", "3", targets=(f"slow={slow}", f"fast={fast}"), out=out)
    assert code == 0
    data = json.loads(out.read_text())
    assert data["config"]["interactive"] == "chat" and data["config"]["interactive_programs"] == 3
    assert len(data["runs"]) == 2 and len(data["results"]) == 2
    for run in data["runs"]:
        assert run["interactive_programs"] == 3 and run["interactive_failed"] == 0
        assert run["interactive_jct_p95"] > 0 and run["programs_per_hour"] > 0
        assert {"engine_hit_share", "preemptions_per_call"} <= run.keys() and run["failed_calls"] == 0
    assert {r["policy"] for r in data["results"]} == {"slow", "fast"}
    assert all(r["interactive_ttft_p95"] > 0 for r in data["results"])
    assert {c["metric"] for c in data["comparisons"]} >= {"programs_per_hour", "interactive_jct_p95"}
    stream = [p for p in data["program_records"] if not p["batch"]]
    assert len(stream) == 6 and all(p["program"].startswith("i-") for p in stream)
    assert "interactive jct p95" in capsys.readouterr().out


def test_the_command_rejects_interactive_without_a_fleet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--workload", "chat", "--target", "a=http://127.0.0.1:1", "--rates", "1",
                 "--programs", "3", "--interactive", "chat", "--json", str(tmp_path / "x.json")])
    assert code == 2 and "needs a closed-loop fleet (--concurrency)" in capsys.readouterr().err
    code = _bench("--programs", "3", "--interactive", "nope", targets=("a=http://127.0.0.1:1",),
                  out=tmp_path / "x.json")
    assert code == 2 and "--interactive: unknown workload" in capsys.readouterr().err


def test_the_command_says_to_draw_more_when_the_fleet_runs_dry(
        serve_fake: ServeFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, url = serve_fake(decode_step=0.0005)
    code = _bench("--programs", "2", "--interactive", "chat", "--interactive-rate", "0.05",
                  targets=(f"a={url}",), out=tmp_path / "x.json")
    assert code == 2 and "draw more --programs" in capsys.readouterr().err
