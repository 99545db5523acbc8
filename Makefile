# loadgate: two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test check lint static format demo demo-bad-release up down lock clean

# The suite runs on PYTEST_WORKERS processes (pytest-xdist). Most of its time is spent waiting
# (services starting, load stages of fixed length, airflow dags test), so more processes than
# cores pays. Each process has its own temporary directory (AIRFLOW_HOME, SQLite, results), S3
# server and free ports; loadgroup: the modules that run the whole gate go in four groups (four
# gate runs at once, each group on one process), every other module to whichever process is
# free, one process taking only those from the start (tests/support/scheduling.py says why).
PYTEST_WORKERS ?= 5
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup
# `make check`: the tests marked as none of the slow tiers (see markers in pyproject.toml).
FAST_TESTS := not slow and not e2e and not deployment and not browser
# The suite starts hundreds of Python processes (Airflow tasks, shards, services) that import
# this checkout's modules, and each worker imports every test module, its asserts rewritten by
# pytest. Where the environment sets PYTHONDONTWRITEBYTECODE (this machine's does), none of
# that is cached: each process compiled again, each worker rewrote every test module (about 5
# CPU-s each). The tests run with Python's caches (`__pycache__/`, ignored by git).
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest

# The pinned requirements go in with uv (pinned here): 29 s in a new virtual environment, .pyc
# files compiled, where pip took 85 s (3 December 2026, this machine, both from warm caches).
UV_VERSION := 0.13.8

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
	    -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# axe-core from npm (pinned by package.json and package-lock.json): the report's browser test
# injects it to find accessibility violations; without npm that check is skipped, saying so
AXE := node_modules/axe-core/axe.min.js

$(AXE): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --silent && touch $(AXE); \
	else echo "npm not found: the report's accessibility check will be skipped (apt-get install npm)"; fi

## test: create the virtual environment if missing, install, lint, run the whole suite (what CI runs)
test: lint static $(AXE)
	$(PYTEST) $(XDIST) --durations=25 $(PYTEST_ARGS)

## check: the inner loop (under 2 minutes): lint, static checks, the fast tests
check: lint static
	$(PYTEST) $(XDIST) -m "$(FAST_TESTS)" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## static: the type checks (mypy, configured in pyproject.toml) and the layers' import contracts
## (import-linter, [tool.importlinter] in pyproject.toml)
static: $(STAMP)
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## demo: the release gate end to end on this machine (reference service, airflow dags test)
demo: $(STAMP)
	$(BIN)/python -m loadgate_syncbridge.demo

## demo-bad-release: the same with a faulty release, which the gate rolls back
demo-bad-release: $(STAMP)
	$(BIN)/python -m loadgate_syncbridge.demo --bad-release

## up: a local Airflow (scheduler, dag-processor, triggerer, api-server; SQLite) running this
## checkout's DAG, and the reference service, on loopback; state in .up/; prints the URL and login
up: $(STAMP)
	$(BIN)/python -m loadgate_syncbridge.up up

## down: stop what `make up` started (by its pid files in .up/run/)
down:
	$(BIN)/python -m loadgate_syncbridge.up down

## lock: re-pin requirements*.txt from requirements*.in (needs PyPI)
lock:
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile requirements.in --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 -o requirements.txt
	$(BIN)/uv pip compile requirements-dev.in --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 -o requirements-dev.txt

clean:
	rm -rf $(VENV)
