"""`autellix sim --workload ...`: sweep CLI, JSON shape, plot, and clear errors for bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from autellix.cli import main
from autellix.sim import hardware as hw

ARGS = ["sim", "--workload", "chat", "--programs", "20", "--scale", "0.2", "--quiet"]


def test_sweep_writes_json_table_and_plot(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main([*ARGS, "--policy", "fcfs,autellix", "--rates", "1,4", "--json", str(out),
                 "--plot", str(png)]) == 0
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [(r["policy"], r["rate"]) for r in rows] == [("fcfs", 1), ("autellix", 1), ("fcfs", 4),
                                                        ("autellix", 4)]  # interleaved per rate
    for r in rows:
        for key in ("policy", "balancer", "engines", "rate", "programs", "mean_latency", "p95_latency",
                    "p99_latency", "mean_jct"):
            assert key in r
        assert r["programs"] == 20 and r["engines"] == 1 and r["balancer"] == "locality"
    assert {c["multiple"] for c in data["comparisons"]} == {2.0, 5.0, 10.0}
    assert png.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "mean_latency" in printed and "throughput at equal mean latency" in printed


def test_one_program_count_per_rate(tmp_path):
    """Each rate gets its own count (the prefix property is tested in test_workloads.py)."""
    out = tmp_path / "r.json"
    assert main([*ARGS, "--policy", "fcfs", "--rates", "0.01,0.02", "--programs", "5,10", "--json",
                 str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["rate"], r["programs"]) for r in rows] == [(0.01, 5), (0.02, 10)]
    assert rows[0]["calls"] < rows[1]["calls"]


def test_backlog_growth_flags_points_past_capacity(tmp_path):
    """Two seats: at 0.05 programs/s the engine keeps up, at 20/s the queue grows for the whole run."""
    out = tmp_path / "r.json"
    assert main([*ARGS, "--programs", "60", "--policy", "fcfs", "--rates", "0.05,20", "--max-num-seqs", "2",
                 "--json", str(out)]) == 0
    light, heavy = json.loads(out.read_text())["results"]
    assert abs(light["backlog_growth"]) < 0.05 and heavy["backlog_growth"] > 0.5


def test_multi_engine_sweep(tmp_path):
    out = tmp_path / "r.json"
    assert main([*ARGS, "--policy", "autellix", "--rates", "2", "--engines", "2", "--balancer",
                 "round_robin", "--swap", "recompute", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert row["engines"] == 2 and row["balancer"] == "round_robin"


def test_kv_offload_flag_reaches_the_engine(tmp_path):
    out = tmp_path / "r.json"
    assert main([*ARGS, "--policy", "fcfs", "--rates", "4", "--kv-offload", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["config"]["kv_offload"] is True and data["results"][0]["kv_offload"] is True
    assert "offload_in_blocks" in data["results"][0]


@pytest.mark.parametrize("extra, message", [
    (["--workload", "poetry", "--rates", "1"], "unknown workload"),
    (["--rates", ""], "at least one arrival rate"),
    (["--rates", "1,x"], "comma-separated numbers"),
    (["--rates", "0"], "must be > 0"),
    (["--rates", "1", "--policy", "lifo"], "unknown 'lifo'"),
    (["--rates", "1", "--balancer", "random"], "balancer"),
    (["--rates", "1", "--swap", "sideways"], "swap"),
    (["--rates", "1", "--hardware", "tpu"], "unknown hardware"),
    (["--rates", "1,2", "--programs", "5,6,7"], "one count or one per rate (2), got 3"),
    (["--rates", "1", "--programs", "0"], "integer >= 1"),
    (["--rates", "1", "--programs", "many"], "N1,N2"),
])
def test_bad_input_is_a_clear_error(extra, message, capsys):
    assert main([*ARGS, *extra]) == 2
    assert message in capsys.readouterr().err


def test_calibration_file_missing_fields(tmp_path, capsys):
    src = hw.find_calibration_file("h200_torch_profile.json")
    data = json.loads(src.read_text())
    del data["llama3.1-8b"]["swap"]["gather_one_copy_s"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert main([*ARGS, "--rates", "1", "--calibration", str(bad)]) == 2
    assert "gather_one_copy_s" in capsys.readouterr().err
    good = tmp_path / "good.json"
    shutil.copy(src, good)
    assert main([*ARGS, "--rates", "1", "--policy", "fcfs", "--calibration", str(good)]) == 0


def test_missing_workload_or_rates(capsys):
    assert main(["sim", "--rates", "1"]) == 2
    assert "--workload" in capsys.readouterr().err
    assert main(["sim", "--workload", "chat"]) == 2
    assert "--rates" in capsys.readouterr().err




def test_closed_loop_fleet_writes_json_table_and_plot(tmp_path, capsys):
    out, png = tmp_path / "f.json", tmp_path / "f.png"
    assert main(["sim", "--workload", "coding", "--scale", "0.3", "--programs", "12", "--quiet",
                 "--policy", "fcfs,autellix,thunderagent", "--concurrency", "2,6",
                 "--baselines", "fcfs", "--json", str(out), "--plot", str(png)]) == 0
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [(r["policy"], r["concurrency"]) for r in rows] == [
        (p, c) for c in (2, 6) for p in ("fcfs", "autellix", "thunderagent")]  # interleaved per point
    for r in rows:
        assert r["programs_per_hour"] > 0 and r["programs_done"] > 0 and 0 <= r["prefix_hit_share"] <= 1
        assert r["new_prompt_tokens"] <= r["prompt_tokens"]
    assert data["config"]["concurrency"] == [2, 6] and data["config"]["working_set_fit"] > 0
    assert {(c["system"], c["concurrency"]) for c in data["comparisons"]} == {
        (p, c) for p in ("autellix", "thunderagent") for c in (2, 6)}
    assert png.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "programs_per_hour" in printed and "1x residency" in printed


def test_a_fleet_beside_an_interactive_stream_reports_each_class(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["sim", "--workload", "coding", "--scale", "0.3", "--programs", "40", "--quiet",
                 "--policy", "fcfs,autellix", "--concurrency", "4", "--interactive", "react",
                 "--interactive-rate", "0.05", "--interactive-programs", "5", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for r in data["results"]:
        assert r["interactive_programs"] == 5 and r["programs_per_hour"] > 0
        assert 0 < r["interactive_jct_p50"] <= r["interactive_jct_p95"] and r["interactive_ttft_p95"] > 0
    assert data["config"]["interactive"] == "react"
    assert "interactive_jct_p95" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--concurrency", "0"], "counts >= 1"),
    (["--concurrency", "4", "--rates", "1"], "not both"),
    (["--rates", "1", "--interactive", "chat"], "needs a closed-loop fleet"),
    (["--concurrency", "4", "--interactive", "nope"], "unknown workload"),
    (["--concurrency", "4", "--interactive", "chat", "--interactive-rate", "0"], "must be > 0"),
])
def test_bad_fleet_input_is_a_clear_error(extra, message, capsys):
    assert main(["sim", "--workload", "coding", "--programs", "4", "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err
