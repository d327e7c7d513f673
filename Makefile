# Pollen developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := $(VENV)/bin/buf
STAMP := $(VENV)/.installed-stamp
PY_SOURCES := pollen conformance scripts tests bench

.PHONY: help install lint format typecheck proto-lint proto-breaking generate check-generated pytest test bench clean

help:
	@echo "make test       install into $(VENV) if needed, then run everything CI runs"
	@echo "make generate   regenerate protobuf code, spec requirements/tables and golden vectors"
	@echo "make bench      run the codec benchmark against flwr 1.42 (slow; writes bench/results/)"
	@echo "make format     apply ruff formatting"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)

format: install
	$(VENV)/bin/ruff format $(PY_SOURCES)
	$(VENV)/bin/ruff check --fix $(PY_SOURCES)

typecheck: install
	$(VENV)/bin/mypy $(PY_SOURCES)

proto-lint: install
	$(BUF) lint
	$(BUF) format --diff --exit-code proto

# Breaking-change check (FILE rules) against the protos on branch main, once main has them.
proto-breaking: install
	@if git rev-parse --verify --quiet main >/dev/null && git cat-file -e main:proto/pollen/v1 2>/dev/null; then \
		echo "buf breaking --against .git#branch=main"; \
		$(BUF) breaking --against '.git#branch=main'; \
	else \
		echo "buf breaking: skipped, branch main holds no protos yet"; \
	fi

generate: install
	$(PY) scripts/generate_core.py
	$(PY) scripts/spec_tool.py
	$(PY) -m conformance.vectors.generate

check-generated: install
	$(PY) scripts/generate_core.py --check
	$(PY) scripts/spec_tool.py --check
	$(PY) -m conformance.vectors.generate --check

pytest: install
	$(PY) -m pytest

test: lint typecheck proto-lint proto-breaking check-generated pytest
	@echo "make test: all checks passed"

bench: install
	$(PY) bench/bench_codec.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build dist
