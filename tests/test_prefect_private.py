"""Prefect's private surface, checked against the installed Prefect (not a stored copy):
an upgrade that changes what the warm worker relies on fails here, loudly."""

from __future__ import annotations

import ast
import inspect

import prefect.engine

from deployments import prefect_private
from deployments.worker.child import ENGINE_ENTRY_CALLS


def call_name(node: ast.Call) -> str:
    return ast.unparse(node.func)


def test_the_engine_entry_the_warm_child_mirrors_is_the_installed_one():
    tree = ast.parse(inspect.getsource(prefect.engine))
    (main,) = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    # ast.walk is breadth first: compare in source order.
    ordered = sorted(
        (n for n in ast.walk(main) if isinstance(n, ast.Call)),
        key=lambda n: (n.lineno, n.col_offset),
    )
    calls = [call_name(n) for n in ordered]
    assert tuple(calls) == ENGINE_ENTRY_CALLS, (
        "prefect.engine's entry changed: compare deployments/worker/child.py:run_flow_run with "
        f"the installed prefect/engine.py. Installed calls: {calls}"
    )


def test_every_private_name_the_worker_uses_still_exists():
    for name in prefect_private.__all__:
        assert callable(getattr(prefect_private, name)), name


def test_the_sqlite_transactions_the_local_server_begins_immediately_still_choose_so():
    """deployments/local/prefect_server.py passes with_for_update=True to make Prefect
    begin every SQLite transaction IMMEDIATE: that must stay what the flag does."""
    begin = prefect_private.sqlite_configuration().begin_transaction
    assert list(inspect.signature(begin).parameters) == ["self", "session", "with_for_update"]
    assert '"IMMEDIATE" if with_for_update else "DEFERRED"' in inspect.getsource(begin)


def test_the_heartbeat_context_runs_end_without_waiting_for_still_takes_that_flag():
    """``end_runs_without_waiting_for_heartbeats`` passes join_on_exit=False, as Prefect's
    async engine does: the flag must still only decide whether the thread is joined."""
    from prefect import flow_engine

    heartbeats = flow_engine._send_heartbeats
    if heartbeats.__module__ == prefect_private.__name__:  # replaced in this process already
        heartbeats = prefect_private._heartbeats
    source = inspect.getsource(heartbeats)
    assert list(inspect.signature(heartbeats).parameters) == ["engine", "join_on_exit"]
    assert "if join_on_exit:\n            thread.join(" in source
    assert "daemon=True" in source and "stop_event.set()" in source
