# The two entry points of the README. Both create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint browser lock

# Every dependency at the version of requirements.lock (made by `make lock`), then the
# project itself.
$(BIN)/media-pipeline: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/media-pipeline server prepare >/dev/null || echo "no database template: a fresh local server migrates its own"
	touch $@

# After a change of dependencies in pyproject.toml: resolve them again, exactly.
lock: setup
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --quiet -o requirements.lock

setup: $(BIN)/media-pipeline

demo: setup
	$(BIN)/media-pipeline db upgrade
	$(BIN)/media-pipeline demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Debian's Chromium and its driver, for the UI test (tests/test_ui.py skips without them).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null)) || \
	  echo "could not install chromium: the UI test will be skipped"

test: setup lint browser
	$(BIN)/pytest
