# Two entry points for people: `make demo` and `make test`. Everything else is for CI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: demo test lint format typecheck bench venv dev clean pglite

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.dev-installed

demo: venv
	$(BIN)/signalengine up

tools/pglite/node_modules: tools/pglite/package-lock.json
	cd tools/pglite && npm ci --no-audit --no-fund
	touch $@

pglite: tools/pglite/node_modules

test: dev pglite
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=25

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy signalengine
	$(BIN)/lint-imports

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: dev
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .state test-artifacts
