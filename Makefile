# The two entry points of the README. Both create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint browser

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

# Debian's Chromium and its driver, for the UI test (tests/test_ui.py skips without them).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null)) || \
	  echo "could not install chromium: the UI test will be skipped"

test: setup lint browser
	$(BIN)/pytest
