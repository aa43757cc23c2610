# Every target sets up what it needs; `make run` and `make test` work on a machine with only python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: run test lint typecheck unit dashboards bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: set up and start the sidecar on 127.0.0.1:8000
run: $(STAMP)
	$(BIN)/sidecar serve

## test: set up, lint, format check, type check and run every test
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check sidecar tests grafana bench scripts
	$(BIN)/ruff format --check sidecar tests grafana bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

## dashboards: rebuild grafana/dashboards/*.json from grafana/build.py
dashboards: $(STAMP)
	$(BIN)/python grafana/build.py

## bench: run the benchmarks and write bench/results.md
bench: $(STAMP)
	$(BIN)/python -m bench

## demo: the sidecar, Prometheus with the shipped rules (if installed) and simulated traffic
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
