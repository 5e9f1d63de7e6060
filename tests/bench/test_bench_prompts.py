"""Prompt sizing: exact token counts, histories kept as prefixes, determinism."""

from __future__ import annotations

import random

from autellix.bench.prompts import PromptBuilder, corpus_offset


def test_prompts_have_the_target_token_count(builder: PromptBuilder) -> None:
    rng = random.Random(0)
    history = ""
    for i in range(120):
        new = rng.choice([1, 3, 12, 57, 300, 1500])
        target = builder.count(history + "\n\n") + new if history else new
        text, n = builder.build(history, target, rng.choice([None, "What is 2 + 2? Explain."]), f"p/{i}")
        assert n == builder.count(text)
        assert abs(n - target) <= max(1, 0.05 * target)
        assert text.startswith(history)
        history = "" if rng.random() < 0.2 else text + " some generated output."


def test_a_history_longer_than_the_target_keeps_its_most_recent_tokens(builder: PromptBuilder) -> None:
    history, _ = builder.build("", 500, None, "long")
    text, n = builder.build(history, 100, "ignored", "k")
    assert abs(n - 100) <= 2 and history.rstrip().endswith(text.strip()[-50:])


def test_building_is_deterministic_and_keys_spread_over_the_corpus(builder: PromptBuilder) -> None:
    assert builder.build("", 200, "Hi.", "a/1") == builder.build("", 200, "Hi.", "a/1")
    assert builder.build("", 200, None, "a/1") != builder.build("", 200, None, "a/2")
    offsets = {corpus_offset(f"prog-{i}/0", len(builder.corpus)) for i in range(50)}
    assert len(offsets) == 50
