# One command per task; CI (.ci/run) calls `make test` verbatim.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STACK_DIR := tests/fhir_stack
NODE_STAMP := $(STACK_DIR)/node_modules/.installed

.PHONY: install run test test-slow lint typecheck format bench stack system-deps node-deps fixtures course-report schema clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

## System packages the tests need (Debian chromium, PostgreSQL); installs only what is missing.
system-deps:
	bash scripts/install-system-deps.sh

## Node packages of the test FHIR server + SMART authorization server (pinned by package-lock.json).
node-deps: $(NODE_STAMP)
$(NODE_STAMP): $(STACK_DIR)/package.json $(STACK_DIR)/package-lock.json
	npm ci --prefix $(STACK_DIR) --no-audit --no-fund --loglevel=error
	touch $@

## ruff (rules and formatting) and mypy --strict over the package, the benchmarks and the tests; tools pinned.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Set up everything and run the whole suite (what CI runs).
test: install node-deps system-deps lint
	$(BIN)/pytest -q -m "not slow"

## The slower targets: fuzzing with >= 10,000 generated requests, soak.
test-slow: install node-deps system-deps
	$(BIN)/pytest -q -m slow

## Ports shared by `make run` and `make stack`: the stack registers the app's SMART callback on PORT and the
## preview page launches the card's dashboard link through the stack's EHR launcher on AUTH_PORT.
PORT ?= 8080
FHIR_PORT ?= 8090
AUTH_PORT ?= 8091

## Set up and serve on http://127.0.0.1:$(PORT) in development mode (auth off, SQLite, fixture patients);
## open http://127.0.0.1:$(PORT)/ for the card preview page. PORT defaults to 8080 (`make run PORT=9000`).
## The card's "Open the IEC-HS dashboard" link opens the evidence view, or, while `make stack` runs (same
## AUTH_PORT), a SMART launch of the real dashboard (CDS_PREVIEW_EHR_LAUNCH_URL; set it empty to turn it off).
run: install
	CDS_PREVIEW_EHR_LAUNCH_URL="$${CDS_PREVIEW_EHR_LAUNCH_URL-http://127.0.0.1:$(AUTH_PORT)/ehr/launch}" \
	$(BIN)/cds-service serve --dev --host 127.0.0.1 --port $(PORT)

## Start the FHIR server + SMART authorization server with the fixtures, for manual interop trials and the
## SMART dashboard of `make run` (its callback on PORT is registered; launch URLs are printed).
stack: install node-deps
	FHIR_PORT=$(FHIR_PORT) AUTH_PORT=$(AUTH_PORT) APP_PORT=$(PORT) $(BIN)/python -m tests.stack

## Regenerate the checked-in fixture bundles from the seeded generator.
fixtures: install
	$(BIN)/python -m fixtures.generate

## The IEC-HS status over whole courses (population and scenarios, coded and raw-only): the README's tables.
course-report: install
	$(BIN)/python -m fixtures.course_report

## Regenerate cds_service/schemas/evaluation.schema.json from the envelope and the instruments' fragments.
schema: install
	$(BIN)/python -m cds_service.engine.schema

bench: install node-deps
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(STACK_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
