"""Autellix: program-aware scheduling and serving for LLM agents."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Program"]


def __getattr__(name: str) -> Any:
    # Lazy: `import autellix` stays light (no openai import) for the engine plugin and the simulator.
    if name == "Program":
        from autellix.client import Program

        return Program
    raise AttributeError(f"module 'autellix' has no attribute {name!r}")
