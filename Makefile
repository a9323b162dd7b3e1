PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint bench clean

install: ## create .venv and install dedup with its dev extras
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"

test: ## run the test suite
	$(BIN)/python -m pytest -q

lint: ## ruff + mypy
	$(BIN)/ruff check dedup tests bench
	$(BIN)/ruff format --check dedup tests bench
	$(BIN)/mypy dedup

bench: ## benchmarks on ../shared/data; results in bench/results/
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
