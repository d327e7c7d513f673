# Pollen developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := $(VENV)/bin/buf
STAMP := $(VENV)/.installed-stamp
PY_SOURCES := pollen pollen_cli reference_server reference_client conformance scripts tests bench examples

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

# Breaking-change check (FILE rules) of the working tree against the last commit that is
# already on main: the merge base with main on a branch, the parent commit on main itself.
proto-breaking: install
	@base=$$(git merge-base HEAD main 2>/dev/null || true); \
	if [ -z "$$base" ] || [ "$$base" = "$$(git rev-parse HEAD)" ]; then base=$$(git rev-parse --verify --quiet HEAD~1 || true); fi; \
	if [ -n "$$base" ] && git cat-file -e "$$base:proto/pollen/v1" 2>/dev/null; then \
		echo "buf breaking --against .git#ref=$$base"; \
		$(BUF) breaking --against ".git#ref=$$base"; \
	else \
		echo "buf breaking: skipped, no earlier commit holds the protos"; \
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
