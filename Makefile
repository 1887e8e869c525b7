# lineageflow — the only two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo

# Telemetry off in everything we start (MLflow reads the string "true", not 1).
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false

.PHONY: demo test test-fast test-unit lint bench bench-dask bench-seams bench-notebook bench-chaos bench-audit venv clean stack stack-down

$(BIN)/lineageflow: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(BIN)/lineageflow

demo: venv  ## build a demo workspace, train on data v1 and v2, promote to Staging
	$(BIN)/lineageflow demo --dir $(DEMO_DIR) --force

test: venv  ## the whole suite: unit, flow and end-to-end tests
	$(BIN)/python -m pytest --durations=15  # where the time goes, each run

test-fast: venv  ## unit and flow tests (the session's Prefect API; no README run)
	$(BIN)/python -m pytest -m "not slow"

test-unit: venv  ## the tests that need no server at all (under a minute here)
	# no ephemeral Prefect server either: a test that starts one is not a unit test
	PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=false $(BIN)/python -m pytest -m "not slow and not server"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: venv  ## benchmarks (not part of `make test`); writes bench/RESULTS.md, bench/DELTA.md, bench/DASK.md, bench/AUDIT.md
	$(BIN)/python bench/run.py
	$(BIN)/python bench/delta.py
	$(BIN)/python bench/engine_dask.py
	$(BIN)/python bench/audit.py

bench-dask: venv  ## the Dask engine on 20M rows, and against the local engine at 5M (about 10 minutes); writes bench/DASK.md
	$(BIN)/python bench/engine_dask.py

bench-chaos: venv  ## 20 trials: kill one stack component by PID mid-run, restart it, check nothing is lost (about 10 minutes); writes bench/CHAOS.md
	$(BIN)/python bench/chaos.py --trials 20 --seed 7

bench-audit: venv  ## the audit of one version (with a rebuild, offline only) against training it; writes bench/AUDIT.md
	$(BIN)/python bench/audit.py

bench-notebook: venv  ## a notebook as model code against bare papermill and a bare script; writes bench/NOTEBOOK.md
	$(BIN)/python bench/notebook.py

bench-seams: venv  ## before/after a code change (SEAMS_BEFORE, default 980e375), interleaved; writes bench/SEAMS.md
	$(BIN)/python bench/seams.py

stack: venv  ## the team stack on 127.0.0.1: PostgreSQL, S3 (moto), MLflow, Prefect, 2 workers, Dask scheduler + 2 workers
	$(BIN)/python -m deployments.up up --dir .stack

stack-down:  ## stop what `make stack` started, by PID
	$(BIN)/python -m deployments.up down --dir .stack

clean:
	rm -rf $(VENV) $(DEMO_DIR) bench/work .pytest_cache .stack
