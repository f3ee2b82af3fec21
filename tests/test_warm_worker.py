"""The warm worker's parts that need no Prefect server: reading pull steps, and the warm
interpreter noticing that code it imported changed. The worker itself runs flow runs in
tests/test_production.py."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

from deployments.worker.interpreter import WarmInterpreter, main_script_imports
from deployments.worker.starter import local_working_directory

STEP = "prefect.deployments.steps.set_working_directory"


def test_only_a_local_working_directory_lets_the_child_skip_the_pull_steps(tmp_path: Path):
    assert local_working_directory([{STEP: {"directory": str(tmp_path)}}]) == tmp_path
    assert local_working_directory(None) is None
    assert local_working_directory([{STEP: {"directory": str(tmp_path / "missing")}}]) is None
    assert local_working_directory([{STEP: {"directory": "{{ $CODE_DIR }}"}}]) is None
    clone = {"prefect.deployments.steps.git_clone": {"repository": "https://example.org/r"}}
    assert local_working_directory([clone]) is None
    assert local_working_directory([{STEP: {"directory": str(tmp_path)}}, clone]) is None


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "warm_probe_module.py").write_text("VALUE = 1\n")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    return tmp_path


def test_warm_interpreter_restarts_when_code_it_imported_changes(module_dir: Path):
    interpreter = WarmInterpreter(["warm_probe_module"])
    try:
        assert interpreter.start() > 0
        source = str(module_dir / "warm_probe_module.py")
        assert source in interpreter._files
        assert not interpreter.stale() and not interpreter.restart_if_stale()

        stat = os.stat(source)
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert interpreter.stale()
        assert interpreter.restart_if_stale()
        assert not interpreter.stale()
    finally:
        interpreter.stop()


def test_warm_interpreter_says_which_module_it_could_not_import():
    interpreter = WarmInterpreter(["flows.media", "no_such_module_here"])
    try:
        with pytest.raises(
            RuntimeError,
            match="could not import no_such_module_here: check MEDIA_PIPELINE_WARM_PRELOAD",
        ):
            interpreter.start()
    finally:
        interpreter.stop()


def test_the_modules_a_script_main_imports_are_preloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    script = tmp_path / "worker-script"
    script.write_text(
        "import re, json\n"
        "from prefect.cli import app\n"
        "from . import sibling_not_absolute\n"
        "if __name__ == '__main__':\n"
        "    import typer  # only when run as a program, not when children re-run it\n"
    )
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert main_script_imports() == ["re", "json", "prefect.cli"]
    assert WarmInterpreter(["flows.media"]).modules[-2:] == ["prefect.cli", "flows.media"]

    main.__spec__ = importlib.util.find_spec("json")  # `python -m ...`: nothing re-runs
    assert main_script_imports() == []
