"""Agent workloads: paper statistics, reproducibility, DAG and prefix invariants, scaling, bad input."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.workloads import (
    WORKLOADS,
    CallSpec,
    ProgramSpec,
    data,
    generate,
    parse_counts,
    program_counts,
    scale_program,
)

try:
    data.data_dir()
    HAVE_DATA = True
except FileNotFoundError:
    HAVE_DATA = False
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="shared/data not found beside the repository")

# Paper targets per call (docs/workloads.md): calls/program, prompt, output;
# chat's prompt is the new user text.
TARGETS = {"chat": (6.66, 256, 277), "react": (10.75, 735, 34), "tree": (159.7, 467, 73)}
SIZES = {"chat": 3000, "react": 2000, "tree": 3000, "mooncake": 300, "mooncake-trace": 300, "coding": 50,
         "mixed": 300, "agent-swe": 50, "agent-bigturn": 50, "agent-long": 50, "agent-mix": 50}


@pytest.fixture(scope="module")
def programs() -> dict[str, list[ProgramSpec]]:
    return {w: generate(w, SIZES[w], rate=2.0, seed=7) for w in sorted(WORKLOADS)} if HAVE_DATA else {}


def _close(got: float, want: float, tol: float = 0.10) -> bool:
    return abs(got / want - 1) <= tol


# ---- statistics -------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("workload", sorted(TARGETS))
def test_statistics_match_paper_targets(programs: dict[str, list[ProgramSpec]], workload: str) -> None:
    ps = programs[workload]
    calls, prompt, output = TARGETS[workload]
    mean_calls = float(np.mean([p.num_calls for p in ps]))
    if workload == "chat":  # the new user text per call; the full prompt carries the history too
        mean_prompt = float(np.mean([p.new_prompt_tokens(i) for p in ps for i in range(p.num_calls)]))
    else:
        mean_prompt = float(np.mean([c.prompt_tokens for p in ps for c in p.calls]))
    mean_output = float(np.mean([c.output_tokens for p in ps for c in p.calls]))
    assert _close(mean_calls, calls), (workload, mean_calls)
    assert _close(mean_prompt, prompt), (workload, mean_prompt)
    assert _close(mean_output, output), (workload, mean_output)


@needs_data
def test_call_count_caps(programs: dict[str, list[ProgramSpec]]) -> None:
    assert max(p.num_calls for p in programs["chat"]) <= 80
    assert max(p.num_calls for p in programs["react"]) <= 70
    assert max(p.num_calls for p in programs["chat"]) >= 20  # a long tail, not a constant


@needs_data
def test_poisson_arrivals(programs: dict[str, list[ProgramSpec]]) -> None:
    arrivals = np.array([p.arrival for p in programs["chat"]])  # 3,000 programs at 2/s
    assert np.all(np.diff(arrivals) >= 0)
    gaps = np.diff(np.concatenate([[0.0], arrivals]))
    assert _close(gaps.mean(), 0.5, 0.06)
    assert _close(gaps.std(), 0.5, 0.1)  # exponential: sd = mean


# ---- reproducibility -------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_same_seed_same_programs(workload: str) -> None:
    a = generate(workload, 20, 1.0, seed=3)
    assert a == generate(workload, 20, 1.0, seed=3)
    if workload != "mooncake-trace":  # the trace itself, in its own order: the seed is unused
        assert a != generate(workload, 20, 1.0, seed=4)


@needs_data
@pytest.mark.parametrize("workload", ["chat", "react", "tree", "mixed"])
def test_rate_only_rescales_arrivals(workload: str) -> None:
    slow, fast = generate(workload, 30, 1.0, seed=5), generate(workload, 30, 4.0, seed=5)
    assert [p.calls for p in slow] == [p.calls for p in fast]
    assert all(math.isclose(s.arrival, 4 * f.arrival) for s, f in zip(slow, fast))


@needs_data
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_draw_keeps_a_prefix_of_the_larger_draw(workload: str) -> None:
    """A sweep with a count per rate replays, at every rate, the first n programs of one draw."""
    full = generate(workload, 12, 1.0, seed=2, scale=0.5)
    assert generate(workload, 5, 1.0, seed=2, scale=0.5, draw=12) == full[:5]
    assert generate(workload, 12, 1.0, seed=2, scale=0.5, draw=12) == full
    with pytest.raises(ValueError, match="draw"):
        generate(workload, 5, 1.0, draw=4)


def test_program_counts_per_rate() -> None:
    assert program_counts(30, 3) == (30, 30, 30)
    assert program_counts(parse_counts("20, 30,80"), 3) == (20, 30, 80)
    assert parse_counts("7") == 7
    with pytest.raises(ValueError, match="one per rate \\(3\\), got 2"):
        program_counts((20, 30), 3)
    with pytest.raises(ValueError, match=">= 1"):
        program_counts((20, 0, 5), 3)
    for bad in ("", "x", "3,y", "2.5"):
        with pytest.raises(ValueError, match="N1,N2"):
            parse_counts(bad)


# ---- structure ------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_dag_and_prefix_invariants(programs: dict[str, list[ProgramSpec]], workload: str) -> None:
    ps = programs[workload]
    assert len({p.program_id for p in ps}) == len(ps)
    for p in ps[:300]:  # an independent re-check with sets, on a sample (ProgramSpec checks them all)
        ancestors: list[set[int]] = []
        for i, c in enumerate(p.calls):
            assert all(0 <= d < i for d in c.depends_on)
            anc = set(c.depends_on).union(*(ancestors[d] for d in c.depends_on))
            ancestors.append(anc)
            if c.prefix_call is not None:
                pc = p.calls[c.prefix_call]
                assert c.prefix_call in anc
                assert pc.prompt_tokens + pc.output_tokens <= c.prompt_tokens
                assert p.new_prompt_tokens(i) >= 0
            assert c.prompt_tokens >= 1 and c.output_tokens >= 1 and c.tool_pause >= 0


@needs_data
def test_tree_search_runs_parallel_threads(programs: dict[str, list[ProgramSpec]]) -> None:
    for p in programs["tree"][:50]:
        assert p.is_parallel and p.num_threads == 5
        samples = [i for i, c in enumerate(p.calls) if c.role == "sample"]
        first = samples[:5]  # one expansion: 5 samples with the same deps, none waiting on another
        assert [p.calls[i].thread for i in first] == [0, 1, 2, 3, 4]
        assert len({p.calls[i].depends_on for i in first}) == 1
        assert not set(first) & set(p.calls[first[0]].depends_on)
        values = [i for i, c in enumerate(p.calls) if c.role == "value"]
        assert len(values) == len(samples)  # one value call per child
        assert all(p.calls[v].depends_on == (v - 5,) for v in values[:5])


@needs_data
def test_sequential_workloads_have_one_thread_and_history(programs: dict[str, list[ProgramSpec]]) -> None:
    for w in ("chat", "react", "coding"):
        for p in programs[w]:
            assert p.num_threads == 1 and not p.is_parallel
            for i, c in enumerate(p.calls[1:], start=1):
                assert c.depends_on == (i - 1,) and c.prefix_call == i - 1  # cumulative history


@needs_data
def test_real_text_goes_along(programs: dict[str, list[ProgramSpec]]) -> None:
    for w in ("chat", "coding"):
        assert all(c.prompt_text for p in programs[w] for c in p.calls)
    assert all(p.calls[0].prompt_text for p in programs["react"] + programs["tree"])


@needs_data
def test_mixed_is_equal_parts_interleaved(programs: dict[str, list[ProgramSpec]]) -> None:
    ps = programs["mixed"]
    assert Counter(p.kind for p in ps) == {"chat": 100, "react": 100, "tree": 100}
    kinds = [p.kind for p in ps]
    assert kinds[:30].count("chat") < 30  # interleaved, not blocks
    assert all(p.program_id.startswith("mixed-") for p in ps)


@needs_data
def test_mooncake_conversations_and_trace_timing() -> None:
    from autellix.workloads import mooncake

    convs = mooncake._trace().conversations
    assert len(convs) == 7373 and sum(len(c.calls) for c in convs) == 12031
    ps = mooncake.generate(2000, 4.0, 0, timing="trace")
    assert _close(len(ps) / ps[-1].arrival, 4.0, 0.15)
    with pytest.raises(ValueError, match="timing"):
        mooncake.generate(5, 1.0, 0, timing="wall")  # type: ignore[arg-type]


@needs_data
def test_coding_replays_real_sessions(programs: dict[str, list[ProgramSpec]]) -> None:
    from autellix.workloads import coding

    sessions = coding._sessions()
    assert len(sessions) == 10 and {len(s.calls) for s in sessions} <= set(range(6, 31))
    assert all(p.calls in {s.calls for s in sessions} for p in programs["coding"])
    assert all(0 <= c.tool_pause <= coding.PAUSE_CAP for s in sessions for c in s.calls)


# ---- scale ------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("workload", ["chat", "react", "tree", "coding"])
def test_scale_keeps_structure_and_shrinks_tokens(workload: str) -> None:
    full = generate(workload, 20, 1.0, seed=1)
    small = generate(workload, 20, 1.0, seed=1, scale=0.1)
    for f, s in zip(full, small):
        assert [(c.depends_on, c.thread, c.prefix_call, c.tool_pause, c.prompt_text) for c in f.calls] == [
            (c.depends_on, c.thread, c.prefix_call, c.tool_pause, c.prompt_text) for c in s.calls
        ]
        assert all(c.prompt_tokens >= 1 and c.output_tokens >= 1 for c in s.calls)
    out_ratio = sum(p.total_output_tokens for p in small) / sum(p.total_output_tokens for p in full)
    prompt_ratio = sum(p.total_prompt_tokens for p in small) / sum(p.total_prompt_tokens for p in full)
    assert 0.09 <= out_ratio <= 0.13 and 0.09 <= prompt_ratio <= 0.13


@settings(max_examples=60, deadline=None)
@given(
    news=st.lists(st.integers(1, 500), min_size=1, max_size=8),
    outs=st.lists(st.integers(1, 500), min_size=8, max_size=8),
    scale=st.floats(0.001, 3.0),
)
def test_scale_program_keeps_prefix_invariant(news: list[int], outs: list[int], scale: float) -> None:
    calls, history = [], 0
    for k, new in enumerate(news):
        calls.append(CallSpec(history + new, outs[k], 0, (k - 1,) if k else (), 0.0, k - 1 if k else None))
        history += new + outs[k]
    scaled = scale_program(ProgramSpec("p", "chat", 0.0, tuple(calls)), scale)  # validates on creation
    assert all(scaled.new_prompt_tokens(i) >= 1 for i in range(len(news)))


# ---- bad input --------------------------------------------------------------------------------------


def test_unknown_workload_names_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown workload 'chatbot'.*chat.*coding.*mixed.*tree"):
        generate("chatbot", 10, 1.0)


@pytest.mark.parametrize("kwargs", [
    {"n_programs": 0, "rate": 1.0}, {"n_programs": -3, "rate": 1.0}, {"n_programs": 5, "rate": 0.0},
    {"n_programs": 5, "rate": -1.0}, {"n_programs": 5, "rate": float("nan")},
    {"n_programs": 5, "rate": 1.0, "scale": 0.0},
])
def test_bad_counts_rates_and_scales_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="n_programs|rate|scale"):
        generate("chat", **kwargs)  # type: ignore[arg-type]


def test_registry() -> None:
    assert WORKLOADS == {"chat", "mooncake", "mooncake-trace", "react", "tree", "coding", "mixed",
                         "agent-swe", "agent-bigturn", "agent-long", "agent-mix"}


def test_missing_data_dir_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="AUTELLIX_DATA_DIR"):
        data.data_dir()


@pytest.mark.parametrize("bad, match", [
    ((), "at least one call"),
    ((CallSpec(5, 5, depends_on=(1,)), CallSpec(5, 5)), "earlier call"),
    ((CallSpec(5, 5), CallSpec(20, 5, prefix_call=0)), "not a \\(transitive\\) dependency"),
    ((CallSpec(5, 5), CallSpec(8, 5, depends_on=(0,), prefix_call=0)), "exceed"),
    ((CallSpec(5, 5), CallSpec(5, 5)), "not a chain"),
    ((CallSpec(0, 5),), "tokens >= 1"),
    ((CallSpec(5, 5, tool_pause=-1.0),), "tool_pause"),
])
def test_program_spec_rejects_broken_programs(bad: tuple[CallSpec, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ProgramSpec("bad", "test", 0.0, bad)


def test_program_spec_properties() -> None:
    calls = (
        CallSpec(10, 4),
        CallSpec(10, 4, thread=1),
        CallSpec(20, 6, thread=0, depends_on=(0, 1), prefix_call=0),
    )
    p = ProgramSpec("p", "tree", 1.5, calls)
    assert (p.num_threads, p.is_parallel, p.total_output_tokens) == (2, True, 14)
    assert (p.prefix_tokens(2), p.new_prompt_tokens(2), p.new_prompt_tokens(0)) == (14, 6, 10)
    moved = p.retimed(9.0, "q")
    assert (moved.arrival, moved.program_id, moved.calls) == (9.0, "q", p.calls)
    with pytest.raises(ValueError, match="arrival"):
        p.retimed(-1.0)


@needs_data
def test_mooncake_trace_keeps_the_traces_bursts_at_the_mean_rate() -> None:
    ps = generate("mooncake-trace", 2000, rate=2.0, seed=0)
    arrivals = np.array([p.arrival for p in ps])
    assert np.all(np.diff(arrivals) >= 0)  # trace order
    assert _close(len(ps) / arrivals[-1], 2.0, 0.05)
    per_10s = np.bincount((arrivals // 10).astype(int))
    assert per_10s.std() / per_10s.mean() > 1.2 * (1 / np.sqrt(per_10s.mean()))  # burstier than Poisson
