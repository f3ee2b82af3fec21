"""How a flow run is doing, read from Prefect: whether it is stranded (its worker or its
own heartbeats fell silent, it stayed claimed but never started) and how many faults in a
row the reconciler has recovered it from. The reconciler reads these for media runs,
``deployments/operations/backfill.py`` for backfills' own runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State, StateType, Worker
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.states import Crashed, Scheduled

from media_pipeline.settings import OrchestrationSettings

MARK = "media-pipeline reconciler"  # how the messages of its reschedules begin
WORKER_LABEL = "prefect.worker.name"


def fault_in_a_row(states: Iterable[State]) -> int:
    """Which fault in a row the run is being recovered from, since anyone else scheduled
    it: 1 for the first.

    A fault is a time a worker took the run (Pending or Running) and it came to nothing. A
    crash reported late, once the reconciler had already scheduled the run again, is the
    fault that reschedule answered: the reschedule that undoes it does not count again."""
    faults, taken = 0, True
    for state in sorted(states, key=lambda s: s.timestamp):
        if state.type is StateType.SCHEDULED:
            if not (state.message or "").startswith(MARK):
                faults, taken = 0, True  # whatever comes next is a fault of its own
                continue
            faults += taken
            taken = False
        elif state.type in (StateType.PENDING, StateType.RUNNING):
            taken = True
    return faults + taken


def diagnose(
    run: FlowRun,
    workers: dict[str, Worker],
    last_heartbeat: datetime | None,
    moment: datetime,
    api_up_since: datetime,
    stall: timedelta,
) -> str | None:
    """Why ``run`` will never record the jobs it owes, or None while it still may."""
    state = run.state
    if state is None:
        return None
    if state.type in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED):
        return f"the run ended {state.name} without recording its jobs"
    if state.type not in (StateType.PENDING, StateType.RUNNING):
        return None  # waiting, paused, cancelling: still on its way
    since = max(state.timestamp, api_up_since)
    name = run.labels.get(WORKER_LABEL)
    worker = workers.get(str(name)) if name else None
    if worker is not None and worker.last_heartbeat_time is not None:
        silence = stall_of(worker, stall)
        if moment - max(worker.last_heartbeat_time, since) > silence:
            return f"its worker {name!r} sent no heartbeat for {seconds(silence)} s"
    if state.type is StateType.PENDING and moment - since > stall:
        return f"claimed by worker {name or '?'!r} but not started for {seconds(stall)} s"
    if state.type is StateType.RUNNING:
        heard = max(last_heartbeat or state.timestamp, since)
        if moment - heard > 2 * stall:
            return f"no heartbeat from the run for {seconds(2 * stall)} s"
    return None


def seconds(span: timedelta) -> int:
    return round(span.total_seconds())


def stall_of(worker: Worker, stall: timedelta) -> timedelta:
    return max(stall, timedelta(seconds=2.5 * (worker.heartbeat_interval_seconds or 30)))


def reschedule_or_give_up(
    client: SyncPrefectClient,
    run: FlowRun,
    reason: str,
    policy: OrchestrationSettings,
    resubmit: str,
) -> tuple[str, str] | None:
    """Schedule a stranded or ended ``run`` again under the same id (``rescheduled``), or,
    after ``max_recoveries`` in a row or when it ran inside a command (gone with it), end it
    Crashed (``failed``); with what was done. None when the run moved on while we looked.
    ``resubmit`` says how to run its work again by hand."""
    fresh = client.read_flow_run(run.id)
    if fresh.state_id != run.state_id:
        return None
    fault = fault_in_a_row(client.read_flow_run_states(run.id))
    final = fresh.state is not None and fresh.state.is_final()
    if fresh.deployment_id is not None and fault <= policy.max_recoveries:
        if not final:
            client.set_flow_run_state(run.id, Crashed(message=f"{MARK}: {reason}"), force=True)
        attempt = f"recovery {fault} of {policy.max_recoveries}"
        client.set_flow_run_state(
            run.id, Scheduled(message=f"{MARK}: {attempt}: {reason}"), force=True
        )
        return "rescheduled", f"{attempt}: {reason}"
    if fresh.deployment_id is None:  # it ran inside a command, which is gone
        message = (
            f"{reason}; it ran in the process of a `media-pipeline process` command, which "
            f"ended: {resubmit}"
        )
    else:
        message = (
            f"{reason}; scheduled again {fault - 1} times by the reconciler, not again: retry "
            f"with `media-pipeline retry-failed {run.id}`"
        )
    if fresh.state is None or fresh.state.type is not StateType.CRASHED:
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return "failed", message


def read_runs(client: SyncPrefectClient, run_ids: list[str]) -> dict[str, FlowRun]:
    found: dict[str, FlowRun] = {}
    for start in range(0, len(run_ids), 200):
        ids = [uuid.UUID(i) for i in run_ids[start : start + 200]]
        for run in client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
        ):
            found[str(run.id)] = run
    return found


def read_workers(client: SyncPrefectClient, pools: set[str | None]) -> dict[str, Worker]:
    workers: dict[str, Worker] = {}
    for pool in sorted(p for p in pools if p):
        for worker in client.read_workers_for_work_pool(pool):
            workers[worker.name] = worker
    return workers


def read_heartbeats(
    client: SyncPrefectClient, run_ids: list[uuid.UUID], since: datetime
) -> dict[uuid.UUID, datetime]:
    """The last flow-run heartbeat event of each run since ``since``."""
    if not run_ids:
        return {}
    page = client.read_events(
        EventFilter(
            occurred=EventOccurredFilter(since=since),
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{i}" for i in run_ids]),
        ),
        limit=50,  # the most the events API returns a page
    )
    last: dict[uuid.UUID, datetime] = {}
    while True:
        for event in page.events:
            run_id = uuid.UUID(event.resource.id.removeprefix("prefect.flow-run."))
            last[run_id] = max(last.get(run_id, event.occurred), event.occurred)
        if not page.next_page:
            return last
        page = client.read_events_page(str(page.next_page))
