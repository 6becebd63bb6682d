# CityBrain: `make demo` serves a synthetic Shandong, `make test` checks everything.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# NGSI-LD client packages pin older httpx/rich, so they live in their own venv for the e2e tests
CLIENTS := .venv-clients/.installed
VENDOR := src/citybrain/web/static/vendor/echarts.min.js
DEMO_SCALE ?= 0.001
DEMO_SEED ?= 1
DEMO_PORT ?= 8000
DEMO_DIR ?= .demo
B ?=
# pytest processes (pytest-xdist); each test keeps its own ports, folders and database
PYTEST_WORKERS ?= 2

.PHONY: install assets demo test lint typecheck pytest bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CityBrain needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CLIENTS):
	$(PYTHON) -m venv .venv-clients
	.venv-clients/bin/pip install --quiet 'ngsildclient>=0.5,<0.6'
	touch $(CLIENTS)

# ECharts comes from the npm registry at build time and is served by the node itself (no CDN).
assets: $(VENDOR)

$(VENDOR): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: installing Debian's npm"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null || \
	  { echo "install Node.js and npm, then run make again"; exit 1; }; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $(VENDOR))
	cp web/node_modules/echarts/dist/echarts.min.js $(VENDOR)

demo: install assets
	$(BIN)/citybrain demo up --scale $(DEMO_SCALE) --seed $(DEMO_SEED) --dir $(DEMO_DIR) --port $(DEMO_PORT)

lint: install
	$(BIN)/ruff check src tests bench scripts

typecheck: install
	$(BIN)/mypy

pytest: install assets $(CLIENTS)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/run.py $(B)

clean:
	rm -rf $(VENV) .venv-clients $(DEMO_DIR) web/node_modules $(dir $(VENDOR))
