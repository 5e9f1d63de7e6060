"""Agent family: preset statistics against their targets, determinism, subagent structure, the fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autellix.workloads import data, generate
from autellix.workloads.agent_family import FAMILY, PRESETS, generator, peak_history_tokens, session_calls
from autellix.workloads.agent_fit import fit_sessions, fit_turns, miniswe_sessions, session_stats
from autellix.workloads.agent_params import AgentParams, TurnDist, mu_for_mean
from autellix.workloads.agent_stats import LONG_REUSE_MIN, family_stats, targets
from autellix.workloads.spec import ProgramSpec

try:
    data.data_dir()
    HAVE_DATA = True
except FileNotFoundError:
    HAVE_DATA = False
pytestmark = pytest.mark.skipif(not HAVE_DATA, reason="shared/data not found beside the repository")

N = 2000
TOLERANCE = 0.10


@pytest.fixture(scope="module")
def family() -> dict[str, list[ProgramSpec]]:
    return {w: generate(w, N, rate=1.0, seed=3) for w in FAMILY}


@pytest.mark.parametrize("workload", list(PRESETS))
def test_preset_statistics_within_10_percent_of_targets(family: dict[str, list[ProgramSpec]],
                                                        workload: str) -> None:
    stats = family_stats(family[workload])
    for name, target in targets()[workload].items():
        if workload == "agent-long" and name == "reuse":
            assert stats[name] > LONG_REUSE_MIN, (name, stats[name])
        else:
            assert stats[name] == pytest.approx(target, rel=TOLERANCE), (workload, name, stats[name], target)


def test_same_seed_same_programs_and_rates_scale_arrivals() -> None:
    for w in FAMILY:
        a, b = generate(w, 40, 1.0, seed=5), generate(w, 40, 1.0, seed=5)
        assert a == b
        fast = generate(w, 40, 4.0, seed=5)
        assert [p.calls for p in fast] == [p.calls for p in a]
        assert np.allclose([p.arrival * 4 for p in fast], [p.arrival for p in a])
        assert generate(w, 40, 1.0, seed=6) != a


def _subagent_threads(p: ProgramSpec) -> dict[int, list[int]]:
    threads: dict[int, list[int]] = {}
    for i, c in enumerate(p.calls):
        if c.thread:
            threads.setdefault(c.thread, []).append(i)
    return threads


def test_subagents_fork_from_the_parent_and_block_it(family: dict[str, list[ProgramSpec]]) -> None:
    programs = family["agent-long"]
    spawning = [p for p in programs if p.num_threads > 1]
    assert len(spawning) / len(programs) == pytest.approx(0.44, rel=TOLERANCE)
    for p in spawning:
        assert p.calls[-1].thread == 0  # the parent's last call ends the program
        for ix in _subagent_threads(p).values():
            first, last = p.calls[ix[0]], ix[-1]
            fork = first.prefix_call
            assert fork is not None and p.calls[fork].thread == 0 and first.depends_on == (fork,)
            assert first.prompt_tokens > p.calls[fork].prompt_tokens + p.calls[fork].output_tokens
            assert all(p.calls[i].prefix_call == i_prev and p.calls[i].depends_on == (i_prev,)
                       for i_prev, i in zip(ix, ix[1:]))
            resume = next(i for i, c in enumerate(p.calls) if c.depends_on == (last,))
            nxt = p.calls[resume]
            assert nxt.thread == 0 and nxt.prefix_call == fork
            assert p.new_prompt_tokens(resume) > p.calls[last].output_tokens  # result + observation
        assert peak_history_tokens(p) >= p.calls[-1].prompt_tokens + p.calls[-1].output_tokens
    # a subagent that ends above the parent's final history makes the peak exceed the last call's
    assert any(peak_history_tokens(p) > p.calls[-1].prompt_tokens + p.calls[-1].output_tokens
               for p in spawning)
    assert all(p.num_threads == 1 for w in ("agent-swe", "agent-bigturn") for p in family[w])


def test_mix_draws_every_preset(family: dict[str, list[ProgramSpec]]) -> None:
    mix = family["agent-mix"]
    assert 0.44 / 3 * 0.8 < np.mean([p.num_threads > 1 for p in mix]) < 0.44 / 3 * 1.2
    assert max(p.calls[-1].prompt_tokens for p in mix) > 100_000  # agent-long's sessions are in it


def test_fit_recovers_the_recorded_sessions_statistics(family: dict[str, list[ProgramSpec]]) -> None:
    recorded = session_stats(miniswe_sessions())
    drawn = family_stats(family["agent-swe"])
    for name in ("turns", "first_prompt", "prompt", "new", "output", "pause"):
        assert drawn[name] == pytest.approx(recorded[name], rel=TOLERANCE), name


def test_fit_recovers_known_parameters() -> None:
    truth = AgentParams(TurnDist(mu_for_mean(12.0, 0.6, 30), 0.6, 30), 2000.0, 0.3, 500.0, 1.0, 200.0, 0.5,
                        1.0, 0.4, 5.0)
    rng = np.random.default_rng(0)
    sessions = [session_calls(rng, truth) for _ in range(3000)]
    fit = fit_sessions(sessions, pause_cap=5.0)
    assert fit.turns.mean() == pytest.approx(12.0, rel=0.03)
    assert fit.turns.sigma == pytest.approx(0.6, rel=0.1)
    for name in ("first_prompt_mean", "new_mean", "output_mean", "pause_mean", "new_sigma", "output_sigma"):
        assert getattr(fit, name) == pytest.approx(getattr(truth, name), rel=0.05), name


def test_turns_fit_handles_the_step_limit() -> None:
    counts = TurnDist(3.2, 0.8, 30).sample(np.random.default_rng(1), 4000)
    assert (counts == 30).mean() > 0.2  # censored
    fit = fit_turns(counts.tolist())
    assert fit.max_turns == 30
    assert fit.mu == pytest.approx(3.2, abs=0.05) and fit.sigma == pytest.approx(0.8, rel=0.05)
    with pytest.raises(ValueError):
        fit_turns([5, 5, 5])


def test_closed_form_expectations_match_draws() -> None:
    p = PRESETS["agent-bigturn"]()
    counts = p.turns.sample(np.random.default_rng(2), 200_000)
    assert counts.mean() == pytest.approx(p.turns.mean(), rel=0.01)
    assert sum(p.turns.pmf()) == pytest.approx(1.0)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        generator("agent-nope")
    with pytest.raises(ValueError):
        TurnDist(1.0, 0.0, 10)
    base = PRESETS["agent-swe"]()
    with pytest.raises(ValueError):
        dataclasses.replace(base, subagent_share=1.5)
    with pytest.raises(ValueError):
        dataclasses.replace(base, new_mean=0.0)
    with pytest.raises(ValueError):
        generate("agent-long", 0, 1.0)
