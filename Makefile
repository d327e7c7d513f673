# Pollen developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := $(VENV)/bin/buf
STAMP := $(VENV)/.installed-stamp
PY_SOURCES := pollen pollen_cli reference_server reference_client conformance scripts tests bench examples

.PHONY: help demo install lint format typecheck proto-lint proto-breaking generate check-generated pytest go-test go-conformance test bench clean

help:
	@echo "make demo       install into $(VENV) if needed, then simulate 100 clients on digits"
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

# The demo needs the examples extra (scikit-learn's digits, matplotlib, tqdm), not dev.
DEMO_STAMP := $(VENV)/.demo-stamp
$(DEMO_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[examples]'
	@touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/pollen simulate

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

# The Go SDK: vet, unit tests (golden vectors included) and the freshness of its generated stubs,
# regenerated with the plugins pinned in clients/go/go.mod into a temporary directory.
GO ?= go
go-test: install
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	(cd clients/go && GOFLAGS=-mod=readonly ../../$(BUF) generate --template buf.gen.yaml -o "$$tmp") && \
	diff -r clients/go/gen "$$tmp/gen" || { echo "clients/go/gen is stale: run 'cd clients/go && ../../$(BUF) generate --template buf.gen.yaml'"; exit 1; }
	@out=$$(cd clients/go && gofmt -l .); test -z "$$out" || { echo "gofmt needed in clients/go: $$out"; exit 1; }
	cd clients/go && GOFLAGS=-mod=readonly $(GO) vet ./... && GOFLAGS=-mod=readonly $(GO) test ./...

# The Go conformance program (clients/go/cmd/pollen-conformance) under the suite, with no
# known failures: every client case, SHOULD included (--strict), and the codec mode.
go-conformance: install
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	(cd clients/go && GOFLAGS=-mod=readonly $(GO) build -o "$$tmp/pollen-conformance" ./cmd/pollen-conformance) && \
	$(VENV)/bin/pollen conformance codec --strict --report-dir "$$tmp/codec" -- "$$tmp/pollen-conformance" codec && \
	$(VENV)/bin/pollen conformance client --strict --report-dir "$$tmp/client" -- "$$tmp/pollen-conformance"

test: lint typecheck proto-lint proto-breaking check-generated pytest go-test go-conformance
	@echo "make test: all checks passed"

bench: install
	$(PY) bench/bench_codec.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build dist
