# micropipe: the two commands are `make run PIPELINE=<name>` and `make test`.
# Both create .venv on first use and install the pinned dependencies into it.

PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.micropipe-installed
# checkov's pins conflict with requirements-dev.lock, so the scanner gets a venv of its own.
SCAN_VENV ?= .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.micropipe-installed
export PATH := $(abspath $(BIN)):$(PATH)

PIPELINE ?=
PRESET   ?= small
SET      ?=
V        ?=
PROFILE  ?=
KFP_HOST ?=
EXPERIMENT ?=
NAMESPACE ?=
DRY_RUN  ?=
PYTEST_ARGS ?=
IMAGES   ?=
BUILD_ARGS ?=

.PHONY: help venv scan-venv run test test-slow golden compile submit lint images bench clean

help:
	@echo "make run PIPELINE=<name> [PRESET=small] [SET=key=value,...]   run a pipeline locally (V=1: the full KFP log)"
	@echo "make test                                                     install, then pytest"
	@echo "make compile [PROFILE=cpu|gpu]                                IR YAML -> build/pipelines/ (default: every profile)"
	@echo "make submit PIPELINE=<name> KFP_HOST=<url> [PRESET=paper]     submit to a cluster"
	@echo "            [PROFILE=gpu] [EXPERIMENT=<name>] [DRY_RUN=1]     token: KFP_TOKEN or in-cluster"
	@echo "            [NAMESPACE=<profile namespace>]                   multi-user Kubeflow"
	@echo "make images [IMAGES=\"base damask\"] [BUILD_ARGS=\"K=V ...\"]     container images (docker, podman or buildah)"
	@echo "make golden                                                   rewrite tests/golden/ (compiled pipelines)"
	@echo "make lint | make bench | make test-slow | make clean"

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -qq --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

$(SCAN_STAMP): requirements-scan.lock
	@test -x $(SCAN_VENV)/bin/python || { echo "creating $(SCAN_VENV) (checkov) with $(PYTHON)"; $(PYTHON) -m venv $(SCAN_VENV); }
	$(SCAN_VENV)/bin/python -m pip install -qq --disable-pip-version-check -r requirements-scan.lock
	@touch $@

scan-venv: $(SCAN_STAMP)

run: $(STAMP)
	@if [ -z "$(PIPELINE)" ]; then $(BIN)/micropipe list; echo; echo "usage: make run PIPELINE=<name> [PRESET=small] [SET=key=value,...]"; exit 0; fi
	$(BIN)/micropipe$(if $(filter-out 0,$(V)), -v) run $(PIPELINE) --preset $(PRESET) $(if $(SET),--set '$(SET)')

test: $(STAMP) $(SCAN_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# After an intended change to a pipeline or a component: the compiled IR that tests/test_golden.py compares with.
golden: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_golden.py --update-golden

compile: $(STAMP)
	$(BIN)/micropipe compile --profile $(or $(PROFILE),all) --out build/pipelines

submit: $(STAMP)
	@if [ -z "$(PIPELINE)" ] || [ -z "$(KFP_HOST)" ]; then echo "usage: make submit PIPELINE=<name> KFP_HOST=<url> [PRESET=paper] [PROFILE=gpu] [EXPERIMENT=<name>] [NAMESPACE=<ns>] [DRY_RUN=1]"; exit 2; fi
	$(BIN)/micropipe submit $(PIPELINE) --host $(KFP_HOST) --preset $(PRESET) --profile $(or $(PROFILE),cpu) $(if $(SET),--set '$(SET)') $(if $(EXPERIMENT),--experiment '$(EXPERIMENT)') $(if $(NAMESPACE),--namespace '$(NAMESPACE)') $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

lint: $(STAMP)
	$(BIN)/ruff check micropipe components pipelines tests benchmarks
	$(BIN)/hadolint --config .hadolint.yaml --failure-threshold warning images/*/Dockerfile

# No venv needed: images/build.sh picks the builder and says plainly what is missing.
images:
	@IMAGES='$(IMAGES)' BUILD_ARGS='$(BUILD_ARGS)' sh images/build.sh

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf build .pytest_cache .ruff_cache
