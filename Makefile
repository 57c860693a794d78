# Every target bootstraps its own virtualenv, so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install test lint demo bench bench-full worker clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint,bench]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check langgraph_tiered_saver devtools tests examples benchmarks
	$(PY) -m mypy

demo: $(STAMP)
	$(PY) -m examples.case_8842

bench: $(STAMP)
	$(PY) -m benchmarks --quick

bench-full: $(STAMP)
	$(PY) -m benchmarks --full

worker: $(STAMP)
	$(PY) -m langgraph_tiered_saver worker

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
