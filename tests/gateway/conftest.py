"""Fixtures for the gateway unit tests (helpers live in gateway_harness.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gateway_harness import Harness, MakeHarness, build_harness  # noqa: E402


@pytest.fixture
def make_harness() -> Iterator[MakeHarness]:
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        made.append(build_harness(**kwargs))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def harness(make_harness: MakeHarness) -> Harness:
    return make_harness()
