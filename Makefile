# comp: the two commands a newcomer needs are `make demo` and `make test`; both create the virtualenv first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
COMP := $(VENV)/bin/comp

.PHONY: setup demo test test-fast folds lint bench bench-quality clean-demo

setup: $(VENV)/.installed

# torch==2.14.1 / torchvision==0.29.1 come from this machine's disk through pip (see DEVELOPERS.md)
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(COMP) demo

# pytest exits 5 when nothing was collected: not a failure of the suite
test: setup
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# the edit loop: everything not marked slow (no training, no extra processes; see DEVELOPERS.md "Tests")
test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

folds: setup
	$(COMP) folds

lint: setup
	$(VENV)/bin/ruff check comp tests bench

bench: setup
	$(PY) -m bench

# comp --budget T + stack vs a plain timm script at equal wall time on real photo sets (~1 h 15 min; see bench/quality.py)
bench-quality: setup
	$(PY) -m bench.quality $(QUALITY_ARGS)
