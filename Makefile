# Kirim: `make dev` runs the service locally, `make test` runs every check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 3

.PHONY: dev test lint typecheck unit openapi bench clean install native

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) native

# The hot pure modules compiled with mypyc into build/native; skipped while up to date, and
# used only while their sources match (service/native.py). Without a C compiler everything
# runs from source; `make test` then fails on purpose (tests/unit/test_native.py).
native: $(STAMP)
	$(BIN)/python -m service.devtools.build_native || \
	  echo "warning: no compiled build; every module runs from source" >&2

dev: $(STAMP) native
	$(BIN)/kirim dev

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench

typecheck: $(STAMP)
	$(BIN)/mypy service

openapi: $(STAMP)
	$(BIN)/kirim openapi

test: $(STAMP) native lint typecheck
	$(BIN)/pytest -n $(JOBS) --dist loadfile -q -m "not alone"
	$(BIN)/pytest -q -m alone

unit: $(STAMP) native
	$(BIN)/pytest -q tests/unit

bench: $(STAMP) native
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .kirim-dev
