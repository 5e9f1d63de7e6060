"""`autellix bench` end to end through the command line, against FAKE upstreams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import ServeFake  # tests/bench/ is on sys.path (conftest.py)

from autellix.cli import main


def test_bench_command_writes_the_sim_schema_and_a_summary(
        serve_fake: ServeFake, dead_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, slow_url = serve_fake(decode_step=0.004)
    _, fast_url = serve_fake(decode_step=0.001)
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    code = main(["bench", "--workload", "chat", "--target", f"slow={slow_url}",
                 "--target", f"fast={fast_url}", "--target", f"dead={dead_url}",
                 "--rates", "10,20", "--programs", "3", "--scale", "0.05",
                 "--tokenizer", "gpt2", "--cooldown", "0", "--json", str(out), "--plot", str(plot)])
    assert code == 0
    data = json.loads(out.read_text())
    assert len(data["results"]) == 6
    for row in data["results"]:
        for key in ("policy", "balancer", "engines", "rate", "programs", "mean_latency", "p95_latency",
                    "p99_latency", "mean_jct"):
            assert key in row
    assert {r["policy"] for r in data["results"]} == {"slow", "fast", "dead"}
    assert data["calls"] and {"ttft", "latency", "target", "program", "thread"} <= set(data["calls"][0])
    assert plot.stat().st_size > 0
    printed = capsys.readouterr()
    assert "fast vs slow" in printed.out and "programs/s at equal mean latency" in printed.out
    assert "dead" in printed.err and "unreachable" in printed.err


def test_bench_command_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--workload", "nope", "--target", "a=http://127.0.0.1:1", "--rates", "1",
                 "--programs", "1", "--json", str(tmp_path / "x.json")]) == 2
    assert "unknown workload" in capsys.readouterr().err
    assert main(["bench", "--workload", "chat", "--target", "a=http://127.0.0.1:1", "--target",
                 "a=http://127.0.0.1:2", "--rates", "1", "--programs", "1",
                 "--json", str(tmp_path / "x.json")]) == 2
    assert "distinct" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--workload", "chat", "--target", "a=http://x", "--rates", "0,-1", "--programs", "1",
              "--json", "x"])
