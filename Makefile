# One command per job; each creates the virtual environment first when it is missing or stale.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install chromium asyncapi-cli run demo test test-quorum test-api-deep lint bench docs images clean

install: $(VENV)/.installed chromium asyncapi-cli

# The browser tests drive Debian's Chromium: installed here when missing (as root, as CI runs), never downloaded.
chromium:
	@test -x /usr/bin/chromium || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "tests/web need Debian's chromium: sudo apt-get install chromium"; fi; }

# The official AsyncAPI CLI (pinned in deploy/asyncapi-cli/package-lock.json) that the tests validate docs/asyncapi
# with: installed from npm into deploy/asyncapi-cli/node_modules, without running any package's install scripts.
ASYNCAPI_CLI := deploy/asyncapi-cli
asyncapi-cli:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(ASYNCAPI_CLI)/node_modules/.installed; \
		else echo "tests/deploy/test_asyncapi_cli.py needs Node.js and npm: sudo apt-get install npm"; fi

$(ASYNCAPI_CLI)/node_modules/.installed: $(ASYNCAPI_CLI)/package-lock.json
	cd $(ASYNCAPI_CLI) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/python -m deploy.local

# A customer's journey against the stack `make run` started (in another terminal), each step with its mails.
demo: install
	$(BIN)/python -m deploy.local.journey

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The runtime's and metering's tests again, every queue a quorum queue (README, "Quorum queues").
test-quorum: install
	PORTAL_TEST_QUEUE_TYPE=quorum $(BIN)/pytest -q tests/runtime tests/metering

# Schemathesis against the gateway with many more examples per operation than `make test` runs.
test-api-deep: install
	GATEWAY_FUZZ_EXAMPLES=100 $(BIN)/pytest -q tests/gateway/test_over_http.py -k schemathesis

bench: install
	$(BIN)/python -m bench

docs: install
	$(BIN)/python -m deploy.asyncapi
	$(BIN)/python -m gateway.openapi

# One image per service, the gateway and the operators' CLI (needs Docker): service-portal-<target>:<version>.
IMAGE_TAG ?= 0.1.0
images:
	for target in accounts registration metering ordering ticketing notifier gateway admin; do \
		docker build -f deploy/Dockerfile --target $$target -t service-portal-$$target:$(IMAGE_TAG) . || exit 1; done

clean:
	rm -rf $(VENV) .data $(ASYNCAPI_CLI)/node_modules
