# kudig — the two commands a newcomer needs:
#   make demo   set everything up and run the demo workflow locally (no cluster)
#   make test   set everything up and run the whole test suite (lint, types, unit,
#               engine, conformance, then the e2e tests on a real local cluster)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
MOMENT := kudig/js/vendor/moment.min.js

.PHONY: setup demo test lint typecheck unit e2e bench clean

$(VENV)/.ready: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(MOMENT): package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p kudig/js/vendor
	cp node_modules/moment/min/moment.min.js $(MOMENT)

setup: $(VENV)/.ready $(MOMENT)

demo: setup
	cd examples/etl && ../../$(BIN)/kudig run etl.dig --rerun --session 2024-01-30 -p orders=30

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy kudig runner/kudig_runner operator/kudig_operator

unit: setup
	$(BIN)/pytest -q tests --ignore=tests/e2e

e2e: setup
	KUDIG_E2E=1 PATH="$(CURDIR)/$(BIN):$$PATH" hack/cluster/e2e

test: lint typecheck unit e2e

bench: setup
	$(PY) bench/compile.py

clean:
	rm -rf $(VENV) node_modules kudig/js/vendor build *.egg-info
