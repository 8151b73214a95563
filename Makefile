# make test: lint (ruff; lint-imports for the layers of DESIGN.md) + test suite.
# make demo: the main job, offline.
# Both create .venv if missing. Torch is installed first from TORCH, which you can override,
# e.g. make test TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install install-dev test demo lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# the demo needs the package alone; lint and tests add the dev extras (Ray, trackers, lm-eval)
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# mup, the reference implementation of muP that a test checks against, declares plotting and
# vision packages it does not import: installed without them
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps mup==1.0.0
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python tools/module_sizes.py

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n auto

demo: install
	$(BIN)/lmablate run studies/quickstart.yaml

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
