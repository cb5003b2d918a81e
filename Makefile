# Two commands do everything on a fresh machine:
#   make demo   - install, start a local InfluxDB, run the demo pipeline
#   make test   - install, run the whole test suite (it starts its own services)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml infra/install-system-deps.sh
	bash infra/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/cricket demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

clean:
	-$(BIN)/cricket influx stop
	@echo "state (models, reports, local InfluxDB data) is kept in $$($(BIN)/python -c 'from cricket.config import default_state_dir; print(default_state_dir())'): remove it by hand to start over"
