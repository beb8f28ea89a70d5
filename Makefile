PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MODEL  ?= models/digits.pkl
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test model lint bench image-test clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# The venv is (re)installed when pyproject.toml or constraints.txt change; the stamp files make it idempotent.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[all]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $@

$(MODEL): | $(VENV)/.installed
	$(PY) -m training data digits data/digits
	$(PY) -m training train data/digits --arch cnn --epochs 12 --lr 1e-2 --out $(MODEL) --onnx

model: $(VENV)/.installed $(MODEL)  ## train the default digits model (models/digits.pkl) if missing

# MALLOC_ARENA_MAX=2: fewer glibc heaps, a lower peak under bursts of large images (README: Memory)
serve: $(VENV)/.installed $(MODEL)  ## install, train the default model if missing, serve on http://127.0.0.1:8000
	MALLOC_ARENA_MAX=2 LEARNSERVE_MODEL_PATH=$(MODEL) $(PY) -m app serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev  ## install with dev extras and run the whole test suite
	$(PY) -m pytest

lint: $(VENV)/.installed-dev  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# make bench CUDA=1: the CUDA contenders on a GPU machine (bench/RESULTS-cuda.md); BENCH_ARGS passes more flags
bench: $(VENV)/.installed-dev  ## benchmark both backends against the in-process limit, the HTTP floor and a minimal server
	@command -v wrk >/dev/null || apt-get install -y -qq wrk || { echo "bench needs wrk: apt-get install wrk"; exit 1; }
	$(PY) -m bench $(if $(filter 1 yes true,$(CUDA)),--cuda) $(BENCH_ARGS)

image-test:  ## build both images (default, slim) with rootful podman and run them for real (minutes; not in make test)
	bash deploy/image-test.sh

clean:  ## remove caches (not the venv, not models)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
