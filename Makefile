# Everything a fresh clone needs, from Python 3.10+, Node/npm and the package registries.
PYTHON ?= python3

VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: re-installs only when pyproject.toml changes.
STAMP := $(VENV)/.taskkit-installed
AZURITE := .azurite/node_modules/.bin/azurite-blob

.PHONY: test lint demo clean

# Two workers (the CI's two cores); the bad-input corpus keeps to one of them (its xdist_group).
test: $(STAMP) $(AZURITE)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict taskkit

demo: $(STAMP)
	$(BIN)/python examples/demo.py

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(AZURITE):
	npm install --prefix .azurite --no-audit --no-fund azurite@3

clean:
	rm -rf $(VENV) .azurite .demo .bench build dist *.egg-info
	rm -rf .mypy_cache .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
