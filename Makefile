# The README's two commands: `make run` (the demo) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
ARTIFACTS ?= test-artifacts

.PHONY: install run serve test lint format bench mutate clean lock

# Every package is pinned with its hashes: a file that differs from the one locked is refused.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-pin after editing requirements.in or requirements-dev.in (existing pins are kept unless
# an edit needs another version; `LOCK_ARGS=--upgrade` moves everything to the newest).
LOCK := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock:
	test -x $(BIN)/pip-compile || $(BIN)/python -m pip install --quiet pip-tools==7.6.2
	$(LOCK) --output-file requirements.txt requirements.in
	$(LOCK) --output-file requirements-dev.txt requirements-dev.in

# The demo: simulator + receiver + dispatcher + admin UI on SQLite.
run: $(STAMP)
	$(BIN)/respawn demo

# The receiver, API and UI alone, on the configured database (see README: Configuration).
serve: $(STAMP)
	$(BIN)/respawn db upgrade
	$(BIN)/respawn serve

# PostgreSQL tests run when the server answers at PG_URL; browser tests when Chromium is
# installed. .ci/run makes both required. Screenshots land in $(ARTIFACTS)/screenshots,
# the branch coverage report (subprocesses included) in $(ARTIFACTS)/coverage; the run fails
# below the floor in pyproject.toml. Tests run in a random order (pytest-randomly prints the
# seed; replay an order with `PYTEST_ARGS=--randomly-seed=N`, or keep file order with
# `PYTEST_ARGS="-p no:randomly"`).
test: $(STAMP)
	RESPAWN_TEST_POSTGRES_URL="$${RESPAWN_TEST_POSTGRES_URL-$(PG_URL)}" \
	RESPAWN_SCREENSHOTS="$(abspath $(ARTIFACTS))/screenshots" \
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --durations=25 \
		--cov --cov-report=term --cov-report=html:$(ARTIFACTS)/coverage $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Mutation testing of the guarantee modules (docs/TESTING.md), not part of `make test`: the
# named mutations first (on PostgreSQL too when PG_URL answers), then mutmut on SQLite.
mutate: $(STAMP)
	RESPAWN_TEST_POSTGRES_URL="$${RESPAWN_TEST_POSTGRES_URL-$(PG_URL)}" \
	$(BIN)/python tools/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf mutants $(VENV) $(ARTIFACTS) .pytest_cache .mypy_cache .ruff_cache
