# ghhook: every target makes its own .venv; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: test lint demo bench install clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet '.[test]'
	touch $@

# Reinstall the checkout (regular install, so twistd finds the plugin exactly
# as a user's `pip install .` does) and refresh the plugin cache.
install: $(STAMP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --force-reinstall .
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ghhook

test: install lint
	$(BIN)/python -m pytest -ra

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/step_output.py
	$(BIN)/python bench/parse_worst.py
	$(BIN)/python bench/attack.py
	$(BIN)/python bench/apps.py

clean:
	rm -rf $(VENV) build dist *.egg-info .demo .bench
