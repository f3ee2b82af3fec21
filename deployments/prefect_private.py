"""Prefect's private surface, in one place: what the warm worker uses that Prefect does not
publish. Prefect is pinned exactly (``pyproject.toml``, ``requirements.lock``) because of
this module; ``benchmarks/prefect_canary.py`` tries the newest Prefect 3.x in a scratch
environment, and ``tests/test_prefect_private.py`` fails loudly when the installed
engine's entry differs from the one ``deployments/warm_child.py`` mirrors.

- The runner's flow-run executor, process handle and control channel (Prefect's own
  process worker runs flow runs through them): starting a child, reporting its exit,
  cancelling it.
- The engine's entry (``python -m prefect.engine``): the control listener, run metrics
  and how a flow's result is driven to its final state.
- The server's SQLite configuration, whose transactions the local server begins
  IMMEDIATE (``deployments/local_prefect_server.py``).
"""

from __future__ import annotations

from prefect._internal.control_listener import configure_from_env
from prefect._internal.metrics import RunMetrics
from prefect.engine import _drive_run_flow_result as drive_run_flow_result
from prefect.runner._control_channel import ControlChannel
from prefect.runner._flow_run_executor import FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.server.database.configurations import AioSqliteConfiguration

__all__ = [
    "AioSqliteConfiguration",
    "ControlChannel",
    "FlowRunExecutorContext",
    "ProcessHandle",
    "RunMetrics",
    "configure_from_env",
    "drive_run_flow_result",
]
