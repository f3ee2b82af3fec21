"""Prefect's private surface, in one place: what the warm worker uses that Prefect does not
publish. Prefect is pinned exactly (``pyproject.toml``, ``requirements.lock``) because of
this module; ``benchmarks/prefect_canary.py`` tries the newest Prefect 3.x in a scratch
environment, and ``tests/test_prefect_private.py`` fails loudly when the installed
engine's entry differs from the one ``deployments/worker/child.py`` mirrors.

- The runner's flow-run executor, process handle and control channel (Prefect's own
  process worker runs flow runs through them): starting a child, reporting its exit,
  cancelling it.
- The engine's entry (``python -m prefect.engine``): the control listener, run metrics
  and how a flow's result is driven to its final state.
- The server's SQLite configuration, whose transactions the local server begins
  IMMEDIATE (``deployments/local/prefect_server.py``).
- The sync flow engine's heartbeat context (``end_runs_without_waiting_for_heartbeats``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from prefect import flow_engine
from prefect._internal.control_listener import configure_from_env
from prefect._internal.metrics import RunMetrics
from prefect.engine import _drive_run_flow_result as drive_run_flow_result
from prefect.runner._control_channel import ControlChannel
from prefect.runner._flow_run_executor import FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle

__all__ = [
    "ControlChannel",
    "FlowRunExecutorContext",
    "ProcessHandle",
    "RunMetrics",
    "configure_from_env",
    "drive_run_flow_result",
    "end_runs_without_waiting_for_heartbeats",
    "sqlite_configuration",
]


_heartbeats = flow_engine._send_heartbeats


def _heartbeats_left_to_stop(
    engine: Any, join_on_exit: bool = True
) -> AbstractContextManager[None]:
    return _heartbeats(engine, join_on_exit=False)


def end_runs_without_waiting_for_heartbeats() -> None:
    """Prefect's sync flow engine joins its heartbeat thread when a run ends, and that
    thread sleeps in steps of one second: up to a second more per run (0.8 s measured),
    a worker slot held or a command kept waiting after the run's final state is set. Its
    async engine does not join (the thread is a daemon that sees the stop within a second,
    and checks the run's state before each heartbeat); here the sync one does the same."""
    flow_engine._send_heartbeats = _heartbeats_left_to_stop  # type: ignore[assignment]


def sqlite_configuration() -> type[Any]:
    """The Prefect server's SQLite configuration (imported here: only the local server's
    process needs Prefect's server code)."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    return AioSqliteConfiguration
