PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint bench bench-peers clean

install: ## create .venv and install dedup with its dev extras
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"

test: ## run the test suite
	$(BIN)/python -m pytest -q

lint: ## ruff + mypy
	$(BIN)/ruff check dedup tests bench
	$(BIN)/ruff format --check dedup tests bench
	$(BIN)/mypy dedup bench

bench: ## benchmarks on ../shared/data; results in bench/results/ (BENCH_ARGS="--full" for full sizes)
	$(BIN)/python bench/run_bench.py $(BENCH_ARGS)

bench-peers: ## separate venv with imagededup + imagehash for the peers benchmark (not dedup dependencies)
	test -x bench/.venv-peers/bin/python || $(PYTHON) -m venv bench/.venv-peers
	# torch + torchvision first, as a matching pair (imagededup imports torchvision even for PHash; a mismatched
	# pair fails with "operator torchvision::nms does not exist"); 2.14.1/0.29.1 install on this machine
	bench/.venv-peers/bin/pip install "torch==2.14.1" "torchvision==0.29.1"
	bench/.venv-peers/bin/pip install "imagededup>=0.3" "imagehash>=4.3"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
