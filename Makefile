# Every target sets up what it needs; `make run` and `make test` work on a machine with only python3.
# Each target installs only what it uses: `run` the runtime dependencies, `demo` those, PyYAML and
# the redis client (for --replicas), the others the dev extras. One stamp per set, so `make run`
# never pulls in mypy or pytest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
VENV_STAMP := $(VENV)/.created
RUN_STAMP  := $(VENV)/.installed-run
DEMO_STAMP := $(VENV)/.installed-demo
DEV_STAMP  := $(VENV)/.installed-dev
# prometheus-operator's CRD schemas for the manifest tests, from npm (skipped without npm,
# except under CI=true, where those tests fail).
CRD    := tests/crd_validation
NODE_STAMP := $(CRD)/node_modules/.installed

.PHONY: run test lint typecheck unit dashboards manifests bench demo clean

$(VENV_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(RUN_STAMP): pyproject.toml | $(VENV_STAMP)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEMO_STAMP): pyproject.toml | $(VENV_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): $(CRD)/package.json $(CRD)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(CRD) --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP); \
	else echo "npm not found: the CRD schema tests will skip (fail under CI=true)"; fi

## run: set up (runtime dependencies only) and start the sidecar on 127.0.0.1:$SIDECAR_PORT (8000)
run: $(RUN_STAMP)
	$(BIN)/sidecar serve

## test: set up, lint, format check, type check and run every test
test: lint typecheck unit

lint: $(DEV_STAMP)
	$(BIN)/ruff check sidecar tests grafana bench scripts deploy
	$(BIN)/ruff format --check sidecar tests grafana bench scripts deploy

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP) $(NODE_STAMP)
	$(BIN)/pytest

## dashboards: rebuild grafana/dashboards/*.json from grafana/build.py
dashboards: $(DEV_STAMP)
	$(BIN)/python grafana/build.py

## manifests: regenerate alerts.yml's runbook links, the PrometheusRule and the dashboard
## ConfigMap (deploy/generate.py; RUNBOOK_BASE_URL=... for a one-off base URL)
manifests: $(DEV_STAMP)
	$(BIN)/python deploy/generate.py $(if $(RUNBOOK_BASE_URL),--runbook-base-url '$(RUNBOOK_BASE_URL)')

## bench: run the benchmarks and write bench/results.md
bench: $(DEV_STAMP)
	$(BIN)/python -m bench

## demo: the sidecar (or --replicas N of them on its own redis-server), Prometheus with the shipped
## rules (if installed) and simulated traffic;
## options in DEMO_ARGS (see `python scripts/demo.py --help`)
demo: $(DEMO_STAMP)
	@$(BIN)/python scripts/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
