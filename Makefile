# The two commands a newcomer needs:
#   make local   start the pipeline locally on embedded defaults
#   make test    set everything up and pass every test
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
STAMP := $(VENV)/.installed
# The scanners' own venv. checkov pins boto3/botocore 1.35, click, packaging
# and networkx at versions that conflict with requirements-dev.txt (boto3 1.43,
# moto, aws-sam-cli), so it cannot live in .venv; bandit shares its venv so
# that both scanners are pinned, installed and upgraded in one place.
SCAN_VENV := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed
# sam build looks for python3.13 on PATH; the venv provides it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: help setup test lint typecheck scan pytest pytest-cluster sam-validate sam-build local lock clean

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

$(SCAN_STAMP): requirements-scan.txt
	@test -x $(SCAN_VENV)/bin/python || "$$(scripts/find-python313)" -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(SCAN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-scan.txt
	@touch $@

# Offline: --skip-download keeps checkov from asking the Bridgecrew/Prisma
# platform for policy metadata, CKV_SKIP_PACKAGE_UPDATE_CHECK from asking PyPI
# for a newer checkov, and a template it cannot parse fails the scan. Each
# suppression is a `checkov: skip:` entry with its reason in the resource's
# Metadata (docs/deploy.md, Security posture).
# bandit fails on any finding in the code that ships (the layer, the handlers,
# mailctl), and on anything above low in the tooling (scripts, bench), whose
# lows are the fixed local commands it runs, asserts that narrow types, random
# benchmark data and placeholder keys for moto. Tests are not scanned.
scan: $(SCAN_STAMP)  ## checkov on template.yaml, bandit on the Python code (offline; a finding fails)
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true CKV_PARSE_ERROR_FAIL=true $(SCAN_VENV)/bin/checkov \
	  --file template.yaml --framework cloudformation --skip-download --compact --quiet
	$(SCAN_VENV)/bin/bandit --quiet --recursive layers/mailcore/mailcore functions cli
	$(SCAN_VENV)/bin/bandit --quiet --recursive --severity-level medium scripts bench

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
test: lint typecheck scan sam-validate sam-build pytest-cluster pytest  ## set everything up, lint, type-check, scan, build, pass every test (what CI runs)

local: setup  ## run the whole pipeline here: Redis, SMTP capture, SQS (moto), the API on :3000, the functions
	python -m scripts.local_stack

# $(call pin,<file>.in,<file>.txt): what <file>.in names, with everything it
# pulls in, installed into a fresh venv and frozen into <file>.txt.
define pin
	rm -rf .lock-venv
	"$$(scripts/find-python313)" -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -r $(1)
	{ echo "# Pinned by 'make lock' from $(1); do not edit by hand."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > $(2)
	rm -rf .lock-venv
endef

lock:  ## re-pin requirements-dev.txt and requirements-scan.txt from their .in files
	$(call pin,requirements-dev.in,requirements-dev.txt)
	$(call pin,requirements-scan.in,requirements-scan.txt)

clean:  ## remove .venv, .venv-scan and the build and tool caches
	rm -rf $(VENV) $(SCAN_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache

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
