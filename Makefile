# One command per job; each creates the virtual environment first when it is missing or stale.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test test-api-deep lint bench docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/python -m deploy.local

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# Schemathesis against the gateway with many more examples per operation than `make test` runs.
test-api-deep: install
	GATEWAY_FUZZ_EXAMPLES=100 $(BIN)/pytest -q tests/gateway/test_over_http.py -k schemathesis

bench: install
	$(BIN)/python -m bench

docs: install
	$(BIN)/python -m deploy.asyncapi
	$(BIN)/python -m gateway.openapi

clean:
	rm -rf $(VENV) .data
