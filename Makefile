# The two entry points of the README. Both create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint

$(BIN)/media-pipeline: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/media-pipeline

demo: setup
	$(BIN)/media-pipeline db upgrade
	$(BIN)/media-pipeline demo

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/pytest
