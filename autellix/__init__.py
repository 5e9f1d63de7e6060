"""Autellix: program-aware scheduling and serving for LLM agents."""

__version__ = "0.1.0"
