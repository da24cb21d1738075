# The two commands a new machine needs: `make demo` and `make test`. Everything else is a step
# they depend on. Only Python 3.11+ with venv is assumed; the rest comes from PyPI.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Much of the suite waits on other processes, browsers and
# sockets, so two workers finish well ahead of one even on two cores; TEST_WORKERS=0 runs in one.
TEST_WORKERS ?= 2
SOCKETIO_JS := web/static/vendor/socket.io.min.js
HTMX_JS     := web/static/vendor/htmx.min.js
NODE_STAMP  := node_modules/.installed-stamp

.PHONY: demo test test-fast lint install serve worker migrate bench mutate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Front-end packages come from the npm registry (pinned in package-lock.json), never copied
# files: the browser's socket.io client and htmx, which the hub serves from web/static/vendor/,
# and axe-core, which the browser tests inject to check accessibility.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(SOCKETIO_JS): $(NODE_STAMP)
	mkdir -p $(dir $@)
	cp node_modules/socket.io-client/dist/socket.io.min.js $@

$(HTMX_JS): $(NODE_STAMP)
	mkdir -p $(dir $@)
	cp node_modules/htmx.org/dist/htmx.min.js $@

install: $(STAMP) $(NODE_STAMP) $(SOCKETIO_JS) $(HTMX_JS)

## Start the hub on embedded defaults (SQLite + embedded Redis under ./var/) with synthetic data.
demo: install
	$(BIN)/hub demo

## Create the virtualenv, install, and run every test. pytest's exit 5 (nothing collected) is
## not a failure of the suite, so it is mapped to 0; every other status passes through.
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

## The fast subset: no subprocesses, no heavy scenarios.
test-fast:
	$(MAKE) test PYTEST_ARGS='-m "not slow" $(PYTEST_ARGS)'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

migrate: install
	$(BIN)/hub migrate

serve: install
	$(BIN)/hub serve

worker: install
	$(BIN)/hub worker

## Every benchmark in bench/, then bench/RESULTS.md. Needs PostgreSQL and Redis: the local
## ones by default, else HUB_BENCH_DATABASE_URL / HUB_BENCH_REDIS_URL. Options to bench.run go
## in BENCH_ARGS (e.g. BENCH_ARGS=dispatch, or --report-only).
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## Mutation trial over the safety-critical rules (docs/testing.md; run before each release, not
## in CI's default run). mutmut works on a copy under mutants/ with SQLite and the embedded
## Redis; the rules and their functions are listed in tests/mutation_score.py, which then prints
## the score per rule and fails on any survivor docs/testing.md does not explain.
## MUTATE_JOBS bounds the parallel test processes (2 by default: the machine is shared).
MUTATE_JOBS ?= 2
mutate: install
	mkdir -p mutants
	$(BIN)/python tests/mutation_score.py --targets | tr '\n' '\0' | \
		xargs -0 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) > mutants/run.log 2>&1 || \
		{ tail -n 40 mutants/run.log; exit 1; }
	$(BIN)/python tests/mutation_score.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache node_modules web/static/vendor mutants
