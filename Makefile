# kudig — the two commands a newcomer needs:
#   make demo   set everything up and run the demo workflow locally (no cluster)
#   make test   set everything up and run the whole test suite (lint, types, then unit,
#               engine, conformance and the e2e tests on a real local cluster, side by side)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
VENDOR := kudig/js/vendor

.PHONY: setup verify-moment demo test lint typecheck unit e2e e2e-cluster e2e-kwok bench clean

$(VENV)/.ready: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# moment.js is committed (kudig/js/vendor, byte-identical to npm's moment 2.21.0; see
# docs/packaging.md), so setup needs no npm. Where npm is installed, setup checks the committed
# files against the tarball package-lock.json pins, once per venv (`make verify-moment` always does).
$(VENV)/.moment-verified: package-lock.json $(VENDOR)/SOURCES $(VENDOR)/moment.min.js $(VENDOR)/moment.LICENSE kudig/ui/static/vendor/SOURCES hack/verify-moment | $(VENV)/.ready
	@if command -v npm >/dev/null; then hack/verify-moment && touch $@; \
	else echo "npm not found: skipped hack/verify-moment (the unit tests still check the pinned sha256)" >&2; fi

verify-moment:
	hack/verify-moment

setup: $(VENV)/.ready $(VENV)/.moment-verified

demo: setup
	cd examples/etl && ../../$(BIN)/kudig run etl.dig --rerun --session 2024-01-30 -p orders=30

lint: setup
	$(BESIDE) $(BIN)/ruff check .
	$(BESIDE) $(BIN)/ruff format --check .
	$(BESIDE) $(BIN)/lint-imports

typecheck: setup
	$(BESIDE) $(BIN)/mypy kudig runner/kudig_runner operator/kudig_operator tests/unit/operator/fake_kube.py

unit: setup
	$(BESIDE) $(BIN)/pytest -q tests --ignore=tests/e2e --durations=15

# The e2e tests' tools, cached under ~/.cache/kudig (warm: instant), in two sets so that neither
# suite waits for the other's on a cold machine:
# - the cluster's: helm (built from the Go module proxy) and Prometheus (Debian's package) for
#   tests/e2e/test_helm.py, Chromium for the UI's browser tests (the unit tests call these
#   scripts themselves);
# - the KWOK tests': kwok (built from the Go module proxy, ~8 min cold) for test_scale_kwok.py.
.PHONY: tools cluster-tools kwok-tools
tools: cluster-tools kwok-tools

cluster-tools:
	hack/helm >/dev/null
	hack/prometheus >/dev/null
	hack/chromium >/dev/null

kwok-tools:
	hack/kwok/build >/dev/null

# The e2e tests: those on the one local test cluster (hack/cluster/e2e starts and stops it), and
# the KWOK scale tests, which start a control plane of their own (hack/kwok) and need neither.
e2e: e2e-cluster e2e-kwok

e2e-cluster: setup cluster-tools
	KUDIG_E2E=1 KUDIG_E2E_SPLIT=1 PATH="$(CURDIR)/$(BIN):$$PATH" hack/cluster/e2e --ignore=tests/e2e/test_scale_kwok.py --durations=15

e2e-kwok: setup kwok-tools
	KUDIG_E2E=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -m e2e tests/e2e/test_scale_kwok.py --durations=5

# The three suites, lint and types side by side: they share nothing but the CPU, so the wall
# time is about the longest one's (e2e-cluster, started first), not the sum. The cluster's e2e
# tests are the long pole and mostly wait on pods: the unit tests, lint and types beside them run
# niced (`BESIDE`), so a waiting e2e test gets the CPU the moment it has work, and they take what
# is left. The KWOK tests are not niced: they hold deadlines while they load their own plane, and
# they are over in the first minutes.
# Each one's output is printed whole when it ends (--output-sync); make fails if any does.
BESIDE ?=
test:
	$(MAKE) --no-print-directory -j5 --output-sync=target BESIDE="nice -n 10" \
		e2e-cluster e2e-kwok unit lint typecheck

bench: setup
	$(PY) bench/compile.py

clean:
	rm -rf $(VENV) node_modules build dist *.egg-info
