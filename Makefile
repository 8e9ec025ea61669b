# crmctl — two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test install install-test system-deps node-deps bench test-big reliability clean

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

# System tools the end-to-end tests drive (a real terminal; a browser for the evidence pack).
# Installed from Debian's packages
# when missing; locally the tests skip with the reason, under CI=true a skip is a failure.
system-deps:
	@command -v tmux >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null; \
	  else echo "tmux missing: end-to-end tests will skip"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: the evidence pack and wall-screen browser tests will skip"; fi; }
	@{ command -v sshd >/dev/null 2>&1 || test -x /usr/sbin/sshd; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; \
	  else echo "sshd missing: the control room over ssh -tt test will skip"; fi; }

# The real OpenID Connect provider the MSAL tests sign in against: npm's oidc-provider, versions
# pinned by tests/peers/oidc/package-lock.json (`npm ci`, re-run when the lock changes). Without
# node/npm the OIDC tests skip locally and fail under CI=true. openssl makes their certificates.
OIDC_PEER := tests/peers/oidc

$(OIDC_PEER)/node_modules/.package-lock.json: $(OIDC_PEER)/package.json $(OIDC_PEER)/package-lock.json
	npm ci --prefix $(OIDC_PEER) --no-audit --no-fund --loglevel=error

node-deps:
	@command -v openssl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; \
	  else echo "openssl missing: the OIDC tests will skip"; fi; }
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory $(OIDC_PEER)/node_modules/.package-lock.json; \
	else echo "node/npm missing: the OIDC tests will skip"; fi

## Seed the demo world, start the embedded emulator and open the control room.
demo: install
	$(BIN)/crmctl demo

## Install the test extra and run the whole suite.
test: install-test system-deps node-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

## The million-row exactness tests (counts and reconcile), about a minute.
test-big: install-test
	CRMCTL_BIG=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/checks/test_reconcile_scale.py

## Benchmarks print figures; they are recorded by hand in docs/benchmarks.md.
bench: install-test
	$(BIN)/python bench/emulator_paging.py
	$(BIN)/python bench/integration_health.py
	$(BIN)/python bench/evidence_export.py
	$(BIN)/python bench/reconcile.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/tui.py

## Reliability in full: hundreds of kills, thousands of fuzz cases, every fault (see docs/reliability.md).
reliability: install-test system-deps
	CRMCTL_RELIABILITY=full $(BIN)/python -m pytest -q -p no:cacheprovider tests/reliability tests/config/test_config_fuzz.py

clean:
	rm -rf $(VENV) data/demo/world data/demo/.crmctl .pytest_cache
