# Billowin — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: help setup install venv up down status test test-terraform unit integration lint typecheck bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(PY)

venv: $(PY) ## Create the virtualenv with Billowin and its dev tools

# The test apps' runtimes too (their version files: Python 3.14, Node 22, Go 1.25…), so that
# `make test` builds them warm. Everything is cached: a second run takes seconds.
RUNTIMES_FOR ?= $(sort $(dir $(wildcard tests/fixtures/apps/*/)))

setup: venv ## Install everything: Debian packages, Nomad, Consul, consul-template, the base and runtime images (cached)
	$(BIN)/billowin setup $(foreach d,$(RUNTIMES_FOR),--runtimes-for $(d))

# The options go through the environment, so that no shell ever reads them.
install: export BILLOWIN_INSTALL_DOMAIN = $(DOMAIN)
install: export BILLOWIN_INSTALL_INTERFACE = $(INTERFACE)
install: export BILLOWIN_INSTALL_PUBLIC_ADDRESS = $(PUBLIC_ADDRESS)
install: export BILLOWIN_INSTALL_ROOT = $(ROOT)
install: export BILLOWIN_INSTALL_HTTP_PORT = $(HTTP_PORT)
install: export BILLOWIN_INSTALL_PRIVATE_INTERFACE = $(PRIVATE_INTERFACE)
install: export BILLOWIN_INSTALL_JOIN = $(JOIN)
install: export BILLOWIN_INSTALL_JOIN_SECRETS = $(JOIN_SECRETS)
install: venv ## As root: a production box run by systemd (make install DOMAIN=example.com INTERFACE=eth0)
	$(BIN)/billowin install

up: venv ## Start the single-box stack; prints every UI and endpoint once all are healthy
	$(BIN)/billowin up

down: venv ## Stop the single-box stack
	$(BIN)/billowin down

status: venv ## Health and versions of every part of the running stack
	$(BIN)/billowin status

# OpenTofu, as `billowin setup` installed it; its CLI config is only for provider installation,
# which formatting does not need.
TOFU = $(shell $(PY) -m billowin.stack.tools tofu)

test: venv ## The whole suite: lint, types, unit tests, integration tests against the real stack
	$(PY) -m tests.testdata
	$(BIN)/ruff check billowin tests bench
	$(BIN)/mypy
	TF_CLI_CONFIG_FILE=/dev/null $(TOFU) fmt -check -recursive -diff terraform/
	$(BIN)/pytest -p no:cacheprovider -ra --ignore=tests/terraform tests

test-terraform: venv ## terraform/ applied for real (needs BILLOWIN_TOFU_MIRROR: a provider mirror)
	@test -n "$$BILLOWIN_TOFU_MIRROR" || { echo "make test-terraform: set BILLOWIN_TOFU_MIRROR to a filesystem mirror of the hashicorp/nomad, hashicorp/consul and hetznercloud/hcloud providers (README, \"Terraform\")" >&2; exit 2; }
	$(BIN)/pytest -p no:cacheprovider -ra tests/terraform

unit: venv ## Unit tests only (fast, no network)
	$(BIN)/pytest -p no:cacheprovider -ra tests/unit

integration: venv ## Integration tests only (starts a real stack on free ports)
	$(BIN)/pytest -p no:cacheprovider -ra tests/integration

lint: venv ## ruff
	$(BIN)/ruff check billowin tests bench

typecheck: venv ## mypy --strict on the package
	$(BIN)/mypy

bench: venv ## Benchmarks against the real stack; results in bench/results/<date>.json
	$(PY) -m bench

clean: ## Remove the virtualenv (the binary and image cache stays)
	rm -rf $(VENV) .mypy_cache .ruff_cache
