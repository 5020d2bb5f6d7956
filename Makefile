# micropipe: the two commands are `make run PIPELINE=<name>` and `make test`.
# Both create .venv on first use and install the pinned dependencies into it.

PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.micropipe-installed
export PATH := $(abspath $(BIN)):$(PATH)

PIPELINE ?=
PRESET   ?= small
SET      ?=
PROFILE  ?=
KFP_HOST ?=
PYTEST_ARGS ?=

.PHONY: help venv run test test-slow compile submit lint bench clean

help:
	@echo "make run PIPELINE=<name> [PRESET=small] [SET=key=value,...]   run a pipeline locally"
	@echo "make test                                                     install, then pytest"
	@echo "make compile [PROFILE=cpu|gpu]                                IR YAML -> build/pipelines/ (default: every profile)"
	@echo "make submit PIPELINE=<name> KFP_HOST=<url> [PRESET=paper]     submit to a cluster"
	@echo "make lint | make bench | make test-slow | make clean"

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -qq --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	@if [ -z "$(PIPELINE)" ]; then $(BIN)/micropipe list; echo; echo "usage: make run PIPELINE=<name> [PRESET=small] [SET=key=value,...]"; exit 2; fi
	$(BIN)/micropipe run $(PIPELINE) --preset $(PRESET) $(if $(SET),--set '$(SET)')

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

compile: $(STAMP)
	$(BIN)/micropipe compile --profile $(or $(PROFILE),all) --out build/pipelines

submit: $(STAMP)
	@if [ -z "$(PIPELINE)" ] || [ -z "$(KFP_HOST)" ]; then echo "usage: make submit PIPELINE=<name> KFP_HOST=<url> [PRESET=paper] [PROFILE=gpu]"; exit 2; fi
	$(BIN)/micropipe submit $(PIPELINE) --host $(KFP_HOST) --preset $(PRESET) --profile $(or $(PROFILE),cpu) $(if $(SET),--set '$(SET)')

lint: $(STAMP)
	$(BIN)/ruff check micropipe components pipelines tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf build .pytest_cache .ruff_cache
