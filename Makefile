# Two commands a user needs: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9

export SENTINEL_HOME ?= $(CURDIR)/var
export DAGSTER_HOME ?= $(SENTINEL_HOME)/dagster
export GX_ANALYTICS_ENABLED := False

.PHONY: setup run ui test lint typecheck defs pytest bench lock clean

setup: $(STAMP)
	@# promtool checks the alert rules (tests/mlops); here, not under the stamp, so that a
	@# checkout set up before it gets it too. Only the tool is wanted: where no policy-rc.d
	@# exists, a temporary one keeps the package's postinst from starting a Prometheus
	@# server, and the boot start it registers is disabled.
	@command -v promtool >/dev/null || ( guard=/usr/sbin/policy-rc.d; own=; \
	  [ -e $$guard ] || { printf '#!/bin/sh\nexit 101\n' >$$guard && chmod +x $$guard && own=1; }; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; rc=$$?; \
	  [ -z "$$own" ] || rm -f $$guard; \
	  { systemctl disable prometheus || update-rc.d prometheus disable; } >/dev/null 2>&1; \
	  exit $$rc )

# Re-installs only when the dependency files change, so a second `make setup` is instant.
# Bytecode is compiled at install (uv does not by default): where PYTHONDONTWRITEBYTECODE is
# set, as on our CI machines, every process would otherwise compile Dagster, MLflow and GX
# from source again (~7 s of each lineage run, and of each test that starts a process).
$(STAMP): pyproject.toml requirements.lock setup.py serving/feature_kernels.pyx vendor/data_docs/package-lock.json
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	@# Java for the Spark feature engine (PySpark runs Spark in a JVM).
	@command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements.lock -e .
	@# The files Data Docs pages load, served from the site (sentinel_dagster/data/data_docs.py).
	@if command -v npm >/dev/null; then npm ci --prefix vendor/data_docs --silent --no-audit --no-fund --ignore-scripts --legacy-peer-deps; else echo "npm not found: Data Docs pages will load their scripts from CDNs"; fi
	@touch $(STAMP)

# The lineage to a published champion (once), then the Dagster UI + daemon and the service.
run: setup
	$(BIN)/sentinel up

# `dg` runs in the project's environment: what activating it would set.
DG := VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg

# The Dagster UI on the same instance `make run` records into.
ui: setup
	@$(BIN)/python -c "from sentinel_dagster.cli.runner import local_instance; from sentinel_dagster.core.paths import sentinel_home; local_instance(sentinel_home()).dispose()"
	$(DG) dev --host 127.0.0.1 --port 3000

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy serving sentinel_dagster

# Every definition in sentinel_dagster/defs loads, as `dg dev` and a deployment load them.
defs: setup
	$(DG) check defs

pytest: setup
	$(BIN)/pytest

test: lint typecheck defs pytest

bench: setup
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.quality
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m benchmarks.http.run
	$(BIN)/python -m benchmarks.state_stores
	$(BIN)/python -m benchmarks.http.access_control

# Regenerate exact pins after changing the ranges in pyproject.toml.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra spark --python-version 3.11 --quiet -o requirements.lock

clean:
	rm -rf $(VENV) *.egg-info
