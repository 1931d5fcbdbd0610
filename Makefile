# Two entry points (see README): `make run` and `make test`.
# Everything installs into ./.venv; Python 3.11+ is the only prerequisite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTOS := attestation reference attestation_agent confidential_data_hub keyprovider plugin
LINT_PATHS := trustee_common kbs as/attestation_service rvps guest tools tests setup.py bench scripts
TYPED_PATHS := trustee_common kbs as/attestation_service rvps guest tools/kbs_client tools/rvps_tool tools/trustee_cli tools/clevis_trustee bench scripts

.PHONY: install install-test run test lint typecheck proto proto-check pytest bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The install is editable, so code changes need no reinstall: stamps skip pip until the metadata changes.
$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(BIN)/python
	bash scripts/system-deps.sh
	$(MAKE) --no-print-directory $(VENV)/.installed-test

## The main job: the whole server stack on embedded storage.
run: install
	$(BIN)/trustee run

## Install test dependencies (Python and Debian packages), then lint, type-check, check generated code, run every test and the benchmark smoke run.
test: install-test lint typecheck proto-check pytest bench-quick

lint:
	$(BIN)/ruff check $(LINT_PATHS)

typecheck:
	$(BIN)/mypy $(TYPED_PATHS)

pytest:
	$(BIN)/python -m pytest -q

## The benchmark in quick mode (under a minute): fails if any flow fails; no timing thresholds.
bench-quick:
	$(BIN)/python -m bench --quick --out build/bench-quick

## Regenerate trustee_pb/ from proto/ (the single source of truth).
proto:
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Itrustee_pb=proto \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
		$(foreach p,$(PROTOS),trustee_pb/$(p).proto)

## Fail when trustee_pb/ differs from what proto/ generates.
proto-check:
	rm -rf build/proto-check && mkdir -p build/proto-check
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Itrustee_pb=proto \
		--python_out=build/proto-check --grpc_python_out=build/proto-check \
		--mypy_out=build/proto-check --mypy_grpc_out=build/proto-check \
		$(foreach p,$(PROTOS),trustee_pb/$(p).proto) > /dev/null
	@for f in build/proto-check/trustee_pb/*; do \
		cmp -s "$$f" "trustee_pb/$$(basename $$f)" || { echo "trustee_pb/$$(basename $$f) is stale: run 'make proto'"; exit 1; }; \
	done
	@echo "trustee_pb/ matches proto/"

clean:
	rm -rf build $(VENV) .mypy_cache .ruff_cache .pytest_cache
