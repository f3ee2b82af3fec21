"""One flow run in a process forked from the warm worker's pre-imported interpreter.

It does what ``python -m prefect.engine`` does for one flow run id (prefect 3.9.1's
``prefect/engine.py``), without starting Python and importing Prefect again: the flow run
the worker already read is passed in, and the flow is loaded from the deployment's
entrypoint (``PREFECT__FLOW_ENTRYPOINT``) when the worker found the deployment's pull steps
to be no more than a working directory.
"""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Connection
from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.context import SettingsContext, get_settings_context
from prefect.engine import handle_engine_signals
from prefect.events.worker import EventsWorker
from prefect.flow_engine import flow_run_logger, load_flow, run_flow
from prefect.logging.handlers import APILogWorker
from prefect.settings import Settings

from deployments.prefect_private import (
    RunMetrics,
    configure_from_env,
    drive_run_flow_result,
    end_runs_without_waiting_for_heartbeats,
)
from flows.backfill import yield_cpu_to_uploads

# The calls of prefect.engine's ``__main__`` block (Prefect 3.9.1) that ``run_flow_run``
# mirrors, in order; tests/test_prefect_private.py compares them with the installed engine.
ENGINE_ENTRY_CALLS = (
    "UUID", "len", "os.environ.get", "engine_logger.error", "exit", "configure_from_env",
    "handle_engine_signals", "load_flow_run", "flow_run_logger", "load_flow",
    "run_logger.error", "RunMetrics", "run_flow", "_drive_run_flow_result",
)  # fmt: skip


def run_flow_run(flow_run_json: dict[str, Any], env: dict[str, str], cwd: str) -> None:
    """Run one flow run to its final state. The exit code tells the worker how it ended:
    0 when the engine reported the outcome, anything else is a crash."""
    os.environ.update(env)
    flow_run = FlowRun.model_validate(flow_run_json)
    yield_cpu_to_uploads(flow_run.tags)  # before any thread starts: they inherit it
    configure_from_env()  # the control channel used for cancellation, before any flow code
    end_runs_without_waiting_for_heartbeats()
    os.chdir(cwd)
    try:
        _run(flow_run)
    finally:
        # A forked child ends with os._exit, which skips the exit hooks that send what is
        # still buffered: the run's last log lines and events would be lost.
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


def _run(flow_run: FlowRun) -> None:
    # Settings were read when the warm interpreter started; this run's come from its env.
    with (
        SettingsContext(profile=get_settings_context().profile, settings=Settings()),
        handle_engine_signals(flow_run.id),
    ):
        run_logger = flow_run_logger(flow_run=flow_run)
        try:
            flow = load_flow(flow_run)
        except Exception:
            run_logger.error(
                "Unexpected exception encountered when trying to load flow", exc_info=True
            )
            raise
        with RunMetrics(flow_run, flow):
            result = run_flow(flow, flow_run=flow_run, error_logger=run_logger)
            drive_run_flow_result(flow, result)


def report_loaded_files(connection: Connection, modules: list[str]) -> None:
    """Send the worker the ``modules`` the interpreter failed to import, and the files whose
    change makes it stale: the source of every module imported from outside the installed
    packages, and the folders of the installed packages (their mtime changes when a
    package is installed or removed)."""
    installed = {p for p in map(str, sys.path) if p.endswith(("site-packages", "dist-packages"))}
    prefixes = (sys.base_prefix, sys.prefix, *installed)
    files = {
        path
        for module in list(sys.modules.values())
        if (path := getattr(module, "__file__", None)) and not path.startswith(prefixes)
    }
    missing = [name for name in modules if name not in sys.modules]
    connection.send((missing, sorted(files | installed)))
    connection.close()
