"""workloads.interactive_stream: the interactive programs beside a batch fleet (autellix sim and bench)."""

from __future__ import annotations

from autellix.workloads import INTERACTIVE_PREFIX, generate, interactive_stream


def test_its_own_seeded_draw_with_prefixed_ids() -> None:
    stream = interactive_stream("chat", 6, 0.5, seed=3, scale=0.1)
    twin = generate("chat", 6, 0.5, seed=4, scale=0.1)  # seed + 1: not the fleet's own draw
    assert [p.program_id for p in stream] == [INTERACTIVE_PREFIX + p.program_id for p in twin]
    assert [(p.arrival, p.calls) for p in stream] == [(p.arrival, p.calls) for p in twin]
    fleet = {p.program_id for p in generate("chat", 50, 1.0, seed=3, scale=0.1)}
    assert not fleet & {p.program_id for p in stream}
    assert [p.program_id for p in interactive_stream("chat", 6, 0.5, seed=3, scale=0.1)] == \
        [p.program_id for p in stream]  # reproducible
