# The two commands a newcomer needs:
#   make local   start the pipeline locally on embedded defaults
#   make test    set everything up and pass every test
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
STAMP := $(VENV)/.installed
# sam build looks for python3.13 on PATH; the venv provides it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: help setup test lint typecheck pytest pytest-cluster sam-validate sam-build local lock clean

# Every target with a `## what it does` comment, in the order of this file.
help:  ## this list
	@echo "The two commands: make local (run the pipeline here), make test (pass every test)."
	@awk -F ':.*## ' '/^[a-z][a-z0-9-]*:.*## / { printf "  make %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

$(STAMP): requirements-dev.txt layers/mailcore/requirements.txt pyproject.toml
	@test -x $(VENV)/bin/python || "$$(scripts/find-python313)" -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

setup: $(STAMP)  ## create .venv (Python 3.13, pinned dependencies, mailctl in .venv/bin) and ensure redis-server
	@scripts/ensure-redis-server

lint: setup  ## ruff check and ruff format --check
	ruff check .
	ruff format --check .

typecheck: setup  ## mypy, strict
	mypy

pytest: setup  ## every test tier against a real redis-server (unit, integration, e2e, reliability, infra)
	pytest

# The integration and e2e tiers again, on a local three-primary Redis Cluster
# with the service in cluster mode over several partitions.
pytest-cluster: setup  ## the integration and e2e tiers on a local Redis Cluster, four partitions
	pytest -q -p no:cacheprovider --redis-cluster tests/integration tests/e2e

sam-validate: setup  ## sam validate --lint (offline)
	sam validate --lint

sam-build: setup  ## sam build (arm64, no Docker), with the venv's python3.13 on PATH
	sam build --parallel

# pytest runs last: the build is checked first, and its summary closes the output.
test: lint typecheck sam-validate sam-build pytest-cluster pytest  ## set everything up, lint, type-check, build, pass every test (what CI runs)

local: setup  ## run the whole pipeline here: Redis, SMTP capture, SQS (moto), the API on :3000, the functions
	python -m scripts.local_stack

lock:  ## re-pin requirements-dev.txt from requirements-dev.in
	rm -rf .lock-venv
	"$$(scripts/find-python313)" -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -r requirements-dev.in
	{ echo "# Pinned by 'make lock' from requirements-dev.in; do not edit by hand."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > requirements-dev.txt
	rm -rf .lock-venv

clean:  ## remove .venv and the build and tool caches
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench bench-operator
bench: setup  ## every benchmark at full size: bench/results/latest.json and docs/performance.md
	python bench/run_all.py

bench-operator: setup  ## time a filtered operator page with 1,000,000 stored deliveries
	python bench/operator_page.py

.PHONY: soak
soak: setup  ## the reliability soak at full length (SOAK_SECONDS, default 300 s) and its figures
	SOAK_SECONDS=$${SOAK_SECONDS:-300} pytest -q -p no:cacheprovider tests/reliability/test_soak.py

.PHONY: coldstart
coldstart: sam-build  ## each handler's init time in a fresh interpreter, and the built sizes (figures only)
	python scripts/coldstart.py
