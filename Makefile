# apiplus — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
KAFKA_LIBS := .cache/kafka/libs
STAMP_VENV := $(VENV)/.installed
STAMP_BENCH := $(VENV)/.installed-bench
STAMP_SYS := .cache/.system-deps
STAMP_KAFKA := $(KAFKA_LIBS)/.fetched

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: $(STAMP_SYS) $(STAMP_VENV) $(STAMP_KAFKA) ## Install everything: Debian packages, the virtualenv, the Kafka jars

$(STAMP_SYS): deploy/system-deps.sh
	@bash deploy/system-deps.sh
	@mkdir -p $(@D) && touch $@

$(STAMP_VENV): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python 3.11 is required"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

$(STAMP_BENCH): $(STAMP_VENV)
	@$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

$(STAMP_KAFKA): deploy/kafka/pom.xml $(STAMP_SYS)
	@rm -rf $(KAFKA_LIBS)
	@mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

infra-up: deps ## Start Kafka and Redis for `make run` (profile run; APIPLUS_PROFILE=test for the test ports)
	@$(PY) deploy/infra.py up

infra-down: ## Stop Kafka and Redis of every profile
	@for p in run test bench chaos; do $(PY) deploy/infra.py down --profile $$p; done

run: deps ## Start Kafka, Redis, Prometheus, the simulator, the three workers and the webhook ingress (:9180); Ctrl-C stops everything
	@$(PY) deploy/run.py

test: deps ## Start the test Kafka and Redis, run every test, stop them
	@APIPLUS_PROFILE=test bash deploy/with-infra.sh $(PY) -m pytest $(PYTEST_ARGS)

bench: deps $(STAMP_BENCH) ## Benchmarks and peers (the `bench` extra) against a baseline in the same run (BENCH_RUNS=3, BENCH_SCALE=1.0); writes bench/results.json
	@APIPLUS_PROFILE=bench bash deploy/with-infra.sh $(PY) -m bench.run

chaos: deps ## Fault, fuzz and leak suite on the real stack (CHAOS_KILLS=3); writes chaos/results.json
	@$(PY) deploy/infra.py reset --profile chaos >/dev/null
	@APIPLUS_PROFILE=chaos bash deploy/with-infra.sh $(PY) -m chaos.run

lint: deps ## ruff, mypy strict and import-linter
	@$(VENV)/bin/ruff check apiplus services tests deploy bench chaos
	@$(VENV)/bin/mypy
	@$(VENV)/bin/lint-imports

check: lint test ## Lint, types, architecture contracts, then the tests

clean: infra-down ## Stop everything and remove state, caches and the virtualenv
	@rm -rf .cache/state $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

.PHONY: help deps infra-up infra-down run test bench chaos lint check clean
