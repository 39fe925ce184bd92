# The two commands of the README: `make run` and `make test`.
# Everything they need is installed here, so they work on a fresh Debian machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

# Every install is pinned by constraints.txt (the lock; `make lock` refreshes it), so
# `make run`, `make test` and CI install the same versions.
CONSTRAINTS := constraints.txt
PIP_INSTALL  = $(BIN)/pip install -q -c $(CONSTRAINTS)

.PHONY: run test lint typecheck pytest servers bench chaos clean lock test-lowest

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"' \
		|| { echo "quart-api needs Python 3.11 or newer as '$(PYTHON)' (make PYTHON=python3.11 ...)"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null \
		|| bash scripts/ensure-packages.sh python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime dependencies only: what `make run` needs (the guards and the service).
$(VENV)/.run-installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[service]'
	@touch $@

# Test and dev tools on top (pytest, ruff, mypy, ...).
$(VENV)/.dev-installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	@touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	@$(BIN)/python scripts/check-port.py $(HOST) $(PORT)
	$(BIN)/alembic upgrade head
	$(BIN)/hypercorn --config hypercorn.toml --bind $(HOST):$(PORT) "quart_api.app:create_app()"

servers:
	@bash scripts/ensure-servers.sh wrk

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# Two pytest processes (pytest-xdist), each with its own servers, a test file's tests
# in one process: most tests wait on servers and sockets, so two halve the wall time
# on two cores. `make test PYTEST_WORKERS=0` runs them in this process.
PYTEST_WORKERS ?= 2

pytest: $(VENV)/.dev-installed servers
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

test: $(VENV)/.dev-installed servers lint typecheck pytest

# The benchmark of issue 6 (minutes; not part of `make test`, whose smoke test runs a
# few seconds of it): `make bench`, or `make bench BENCH_ARGS="--workers 2 --rounds 5"`.
BENCH_ARGS ?=

$(VENV)/.bench-installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev,bench]'
	@touch $@ $(VENV)/.dev-installed $(VENV)/.run-installed

bench: $(VENV)/.bench-installed
	@bash scripts/ensure-servers.sh wrk
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The fault scenario of issue 7 (about a minute; not part of `make test`, whose
# tests/resilience/test_chaos.py runs its short version): Redis, memcached and
# PostgreSQL fail one after another under load; exits non-zero if a requirement
# breaks. `make chaos CHAOS_ARGS="--connections 64 --fuzz-examples 1000"`.
CHAOS_ARGS ?=

chaos: $(VENV)/.bench-installed
	@bash scripts/ensure-servers.sh wrk
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# Refresh the lock after changing a dependency in pyproject.toml (or to take new
# releases): every extra, resolved for Python 3.11+ on every platform by uv.
lock: | $(BIN)/python
	$(BIN)/pip install -q "uv>=0.9,<1"
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
		--upgrade --quiet --custom-compile-command "make lock" --output-file $(CONSTRAINTS)

# The floors in pyproject.toml, proven: a separate venv with the LOWEST version each
# runtime dependency allows (scripts/lowest-constraints.py pins every floor), then the
# guards and store tests against real Redis and memcached, and the tests of the adapters to
# library internals (tests/adapters). Minutes; not part of make test.
LOWEST := .venv-lowest

test-lowest: servers
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) scripts/lowest-constraints.py > $(LOWEST)/lowest.txt
	$(LOWEST)/bin/pip install -q -c $(LOWEST)/lowest.txt -e '.[service,test]'
	@echo "Installed at the floors:" && $(LOWEST)/bin/pip freeze --exclude-editable \
		| grep -iE "^($$(sed 's/==.*//; s/[-_]/[-_]/g' $(LOWEST)/lowest.txt | paste -sd'|'))=="
	$(LOWEST)/bin/pytest -q -p no:cacheprovider tests/guards tests/adapters

# Issue 16, several hosts (about 15 minutes; not part of `make test`, whose
# tests/test_cluster_bench_smoke.py runs its short version): a Redis Cluster with
# replicas, a Sentinel group, 2 memcached and PostgreSQL behind delaying relays, three
# app hosts; throughput at store RTTs 0-2 ms, exactness, growth, failover.
# `make cluster-bench CLUSTER_BENCH_ARGS="--rtts 0,1 --rounds 5"`.
CLUSTER_BENCH_ARGS ?=

.PHONY: cluster-bench
cluster-bench: $(VENV)/.bench-installed
	@bash scripts/ensure-servers.sh wrk
	$(BIN)/python -m bench.cluster $(CLUSTER_BENCH_ARGS)

clean:
	rm -rf $(VENV) $(LOWEST) .mypy_cache .pytest_cache .ruff_cache quart_api.db*
