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
SYSTEM_PACKAGES := espeak-ng festival festvox-ru rhvoice rhvoice-russian libsndfile1 postgresql
# RHVoice (a third Russian speech engine) is in Debian's non-free section: where no apt source
# offers it, set-up adds that section of the system's own Debian release in this file.
NONFREE_SOURCE := /etc/apt/sources.list.d/heardet-debian-non-free.sources
# Spark's Java runtime; not installed when `java` is already on PATH.
JAVA_PACKAGE := default-jre-headless
STACK  ?= .stack
MLFLOW_PORT ?= 5000

.PHONY: setup system-deps demo test test-slow test-integration server server-stop lint clean

setup: system-deps $(STAMP)

# Debian/Ubuntu packages for speech synthesis and audio tools, PostgreSQL and Java (the team
# stack and Spark); installed only when missing.
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
	  command -v java >/dev/null 2>&1 || echo $(JAVA_PACKAGE)); \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:" $$missing; \
	  $(SUDO) apt-get update -qq || exit $$?; \
	  if echo "$$missing" | grep -q rhvoice && [ -z "$$(apt-cache policy rhvoice-russian 2>/dev/null | grep Candidate: | grep -v none)" ]; then \
	    . /etc/os-release; \
	    if [ "$$ID" = debian ] && [ -n "$$VERSION_CODENAME" ]; then \
	      echo "adding Debian's non-free section ($$VERSION_CODENAME) for rhvoice: $(NONFREE_SOURCE)"; \
	      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	        "$$VERSION_CODENAME" | $(SUDO) tee $(NONFREE_SOURCE) >/dev/null && $(SUDO) apt-get update -qq || exit $$?; \
	    else \
	      echo "warning: no apt source here offers rhvoice-russian (Debian: non-free); installing the rest," \
	        "and datasets with --rhvoice-fraction above 0 will name what is missing" >&2; \
	      missing=$$(echo $$missing | tr ' ' '\n' | grep -v rhvoice | tr '\n' ' '); \
	    fi; \
	  fi; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel

# A failed install shows the free space: a full disk otherwise surfaces as pip's bare OSError.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e '.[offline,test,team]' || { rc=$$?; \
	  echo "make setup: pip install failed (exit $$rc); free space where the venv lives:" >&2; df -h $(VENV) >&2; \
	  echo "the wheels (torch and its dependencies) need a few GiB free" >&2; exit $$rc; }
	@touch $(STAMP)

# The main job: every approach end to end (PROFILE=quick ~20 min on 2 cores from cold caches; PROFILE=full 82 min to about 2 h 15 min from cold caches, by the machine, benchmarks/README.md).
# Its runs land in the experiment heardet-demo of ./mlflow.db (the stages as child runs).
demo: setup
	$(RUN_ENV) $(VENV)/bin/mlflow run . -e main --experiment-name heardet-demo -P profile=$(PROFILE) -P data=$(DATA) \
	  --env-manager local

# The quick suite; the integration tests (a real PostgreSQL, mlflow server and Spark, which the
# tests start and stop themselves) run with `make test-integration`; .ci/run runs both.
test: setup
	$(RUN_ENV) $(PY) -m pytest -q

test-integration: setup
	$(RUN_ENV) $(PY) -m pytest -q -m integration

# A team tracking stack on this machine: PostgreSQL (data in $(STACK)/pg) and mlflow server on
# 127.0.0.1:$(MLFLOW_PORT) with proxied artifacts; prints the variables to export.
server: setup
	$(RUN_ENV) $(VENV)/bin/heardet stack start --root $(STACK) --port $(MLFLOW_PORT)

server-stop:
	$(RUN_ENV) $(VENV)/bin/heardet stack stop --root $(STACK)

test-slow: setup
	$(RUN_ENV) $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) mlruns mlflow.db .pytest_cache
