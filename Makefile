# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPOSITORY ?= model_repository
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup models serve test test-fast readme readme-check bench bench-quick perf audit clean help

help:
	@echo "make serve   set up, build the models if missing or changed, serve on $(HOST):$(PORT)"
	@echo "make test    set up, build the models if missing or changed, run the test suite"
	@echo "make test-fast  the same without the slow tests (own servers, builds, floods, fuzzing, browser): for every change"
	@echo "make bench   the service vs the raw in-process limit vs a naive server (needs wrk), about 8 minutes"
	@echo "make perf    Triton's perf_analyzer over REST and gRPC (needs libb64-0d), about 10 minutes"
	@echo "make setup [ORT=cpu|gpu] | make models | make readme | make readme-check | make clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# The ONNX Runtime build: `gpu` when nvidia-smi finds a GPU, else `cpu`; `make setup ORT=cpu` overrides.
ORT ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
OTHER_ORT := $(if $(filter gpu,$(ORT)),onnxruntime,onnxruntime-gpu)

# The stamp is refreshed whenever pyproject.toml changes or the build switches; the other build is removed
# first, because both provide the same `onnxruntime` module.
$(VENV)/.installed-$(ORT): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip uninstall -y -q $(OTHER_ORT)
	rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install -e '.[$(ORT),train,test,bench]'
	touch $@

setup: $(VENV)/.installed-$(ORT)

# Trains only what changed (content hash); unchanged models come from the cache in ~/.cache/ortserve.
models: setup
	$(BIN)/python -m export build --repository $(REPOSITORY)

readme: setup
	$(BIN)/python -m export readme --repository $(REPOSITORY)

# Fails, with a diff, when README.md's generated tables differ from what the built manifests give.
readme-check: setup
	$(BIN)/python -m export readme --check --repository $(REPOSITORY)

serve: models
	$(BIN)/python -m service --host $(HOST) --port $(PORT) --model-repository $(REPOSITORY)

test: models
	ORTSERVE_MODEL_REPOSITORY=$(abspath $(REPOSITORY)) $(BIN)/python -m pytest

# The loop to run on every change: unit tests and the API tests that share one server (no builds, floods,
# fuzzing or browser); `make test` runs everything.
test-fast: models
	ORTSERVE_MODEL_REPOSITORY=$(abspath $(REPOSITORY)) $(BIN)/python -m pytest -m "not slow"

bench: models
	$(BIN)/python -m bench --repository $(REPOSITORY)

bench-quick: models
	$(BIN)/python -m bench --quick --repository $(REPOSITORY)

# Triton's perf_analyzer over REST and gRPC, concurrency 1, 4, 16 and 64 on each model (needs libb64: Debian libb64-0d).
perf: models
	$(BIN)/python -m bench.perf --repository $(REPOSITORY)

# pip-audit of the serving dependencies: fails on a known vulnerability that has a fix.
audit: setup
	$(BIN)/python scripts/audit_runtime.py

clean:
	rm -rf $(VENV) $(REPOSITORY) .pytest_cache
