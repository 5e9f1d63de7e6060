"""Autellix inside vLLM: the scheduler plugin (`engine.vllm`). Starting engines (`autellix engine`,
`autellix serve`) is deployment: autellix.deploy.

Importing this package does not import vLLM; only `autellix.engine.vllm` does.
"""
