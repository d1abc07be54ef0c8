# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPOSITORY ?= model_repository
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup models serve test readme bench bench-quick clean help

help:
	@echo "make serve   set up, build the models if missing or changed, serve on $(HOST):$(PORT)"
	@echo "make test    set up, build the models if missing or changed, run the test suite"
	@echo "make bench   the service vs the raw in-process limit vs a naive server (needs wrk), about 8 minutes"
	@echo "make setup | make models | make readme | make clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# The stamp is refreshed whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[train,test,bench]'
	touch $@

setup: $(VENV)/.installed

# Trains only what changed (content hash); unchanged models come from the cache in ~/.cache/ortserve.
models: setup
	$(BIN)/python -m export build --repository $(REPOSITORY)

readme: setup
	$(BIN)/python -m export readme --repository $(REPOSITORY)

serve: models
	$(BIN)/python -m service --host $(HOST) --port $(PORT) --model-repository $(REPOSITORY)

test: models
	ORTSERVE_MODEL_REPOSITORY=$(abspath $(REPOSITORY)) $(BIN)/python -m pytest

bench: models
	$(BIN)/python -m bench --repository $(REPOSITORY)

bench-quick: models
	$(BIN)/python -m bench --quick --repository $(REPOSITORY)

clean:
	rm -rf $(VENV) $(REPOSITORY) .pytest_cache
