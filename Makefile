# loadgate: two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint format demo demo-bad-release lock clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## test: create the virtual environment if missing, install, lint, run the whole suite
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## demo: the release gate end to end on this machine (reference service, airflow dags test)
demo: $(STAMP)
	$(BIN)/python -m loadgate_syncbridge.demo

## demo-bad-release: the same with a faulty release, which the gate rolls back
demo-bad-release: $(STAMP)
	$(BIN)/python -m loadgate_syncbridge.demo --bad-release

## lock: re-pin requirements*.txt from requirements*.in (needs PyPI)
lock:
	test -x $(BIN)/uv || $(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile requirements.in --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 -o requirements.txt
	$(BIN)/uv pip compile requirements-dev.in --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 -o requirements-dev.txt

clean:
	rm -rf $(VENV)
