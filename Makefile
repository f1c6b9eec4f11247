# heardet — the two commands a newcomer needs:
#   make demo   set everything up, then run the main job on the embedded defaults
#   make test   set everything up, then run the fast test suite
# Set-up is idempotent: a second run only checks stamps and takes seconds.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.heardet-installed
DATA   ?= data
PROFILE ?= quick
# Entry points run with `python` from PATH (--env-manager local): the project's venv first.
RUN_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := espeak-ng festival festvox-ru libsndfile1

.PHONY: setup system-deps demo test test-slow lint clean

setup: system-deps $(STAMP)

# Debian/Ubuntu packages for speech synthesis and audio tools; installed only when missing.
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e '.[offline,test]'
	@touch $(STAMP)

# The main job: every approach end to end (PROFILE=quick ~27 min on 2 cores; PROFILE=full).
# Its runs land in the experiment heardet-demo of ./mlflow.db (the stages as child runs).
demo: setup
	$(RUN_ENV) $(VENV)/bin/mlflow run . -e main --experiment-name heardet-demo -P profile=$(PROFILE) -P data=$(DATA) \
	  --env-manager local

test: setup
	$(RUN_ENV) $(PY) -m pytest -q

test-slow: setup
	$(RUN_ENV) $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) mlruns mlflow.db .pytest_cache
