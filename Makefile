# Everything a fresh clone needs, from Python 3.10+, Node/npm and the package registries.
PYTHON ?= python3

VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: re-installs only when pyproject.toml changes.
STAMP := $(VENV)/.taskkit-installed
AZURITE := .azurite/node_modules/.bin/azurite-blob
# The report's browser test draws its page in Debian's Chromium; root installs it, others sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test lint demo clean chromium

# Two workers (the CI's two cores); the bad-input corpus keeps to one of them (its xdist_group).
test: $(STAMP) $(AZURITE) chromium
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

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) .azurite .demo .bench build dist *.egg-info
	rm -rf .mypy_cache .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
