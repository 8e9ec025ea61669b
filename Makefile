# crmctl — two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test install install-test system-deps bench reliability clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[test,serve]"
	touch $@

install: $(VENV)/.runtime

install-test: $(VENV)/.test

# System tools the end-to-end tests drive (a real terminal). Installed from Debian's packages
# when missing; locally the tests skip with the reason, under CI=true a skip is a failure.
system-deps:
	@command -v tmux >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null; \
	  else echo "tmux missing: end-to-end tests will skip"; fi; }

## Seed the demo world, start the embedded emulator and open the control room.
demo: install
	$(BIN)/crmctl demo

## Install the test extra and run the whole suite.
test: install-test system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

## Benchmarks print figures; they are recorded by hand in docs/benchmarks.md.
bench: install-test
	$(BIN)/python bench/emulator_paging.py

clean:
	rm -rf $(VENV) data/demo/world data/demo/.crmctl .pytest_cache
