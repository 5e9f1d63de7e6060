"""Autellix inside vLLM: the scheduler plugin (`engine.vllm`) and the engine launcher (`engine.launch`).

Importing this package does not import vLLM; only `autellix.engine.vllm` does.
"""
