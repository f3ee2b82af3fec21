"""The reconciler: every submitted media reaches a final status with no human action.

Prefect marks a run Crashed when its process ends badly under a live worker, but nothing in
Prefect 3.9 takes care of the runs of a worker that died: claimed (Pending) and never
started, or Running with their process gone (its zombie automation starts counting only
after a first heartbeat event, and nothing reschedules a crashed run). Bull's stalled-job
check did; this does, from the app database's side, which says what is still to be done:

1. every job row still PENDING or RUNNING names the flow run that owes it;
2. a run owes its jobs in vain when it ended (Completed, Failed, Crashed) without recording
   them, or is stranded: its worker stopped sending heartbeats, it stayed claimed but not
   started, or it stopped sending flow-run heartbeats;
3. such a run is scheduled again under the same id, so that the jobs it had finished come
   from Prefect's result cache, at most ``max_recoveries`` times in a row; then it is
   marked Crashed with the reason and its jobs FAILED, which ``failed`` lists and
   ``retry-failed`` re-runs. A run that ran inside a ``media-pipeline process`` command
   (no deployment) and fell silent is not scheduled again: its command is gone, so it is
   marked Crashed and its jobs FAILED at once. A cancelled run's jobs are marked FAILED
   at once;
4. planned jobs that never got a run (their submitter died in between) are submitted again;
5. erasures whose stores could not all be cleared (a store away, runs still cancelling)
   are finished (``deployments/erasure.py``).

Absence of heartbeats only counts while the reconciler itself has reached the API: after an
outage of the Prefect server every clock starts again. Each warm worker runs a reconciler
every ``reconcile_seconds``; one pass acts at a time (an advisory lock in the app
database). ``media-pipeline reconcile`` runs one pass, or a loop beside stock workers.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State, StateType, Worker
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.states import Crashed, Scheduled
from sqlalchemy.orm import Session

from db.jobs import fail_unfinished_jobs, try_lock, unfinished_jobs
from db.session import session_scope
from deployments.erasure import continue_erasures
from flows.submission import submit_media
from media_pipeline.settings import OrchestrationSettings, get_settings

MARK = "media-pipeline reconciler"
LOCK = "media-pipeline:reconciler"
WORKER_LABEL = "prefect.worker.name"
# How often every flow run sends a heartbeat, under a worker or in a command's own process
# (Prefect's default is 180 s): a run silent for twice ``stall_seconds`` is stranded.
FLOW_HEARTBEAT_SECONDS = 30
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """What one pass did about one run (or one media without a run)."""

    media_id: str
    flow_run_id: str | None
    action: str  # rescheduled, failed, resubmitted, erased
    reason: str


def beyond_recovery(run_id: str, run: FlowRun | None) -> str | None:
    """Why the run's jobs can only be marked FAILED: it is gone, or someone cancelled it."""
    if run is None:
        return f"flow run {run_id} no longer exists; submit the media again"
    if run.state is not None and run.state.type is StateType.CANCELLED:
        return f"the run was cancelled: {run.state.message or 'no reason given'}"
    return None


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


class Reconciler:
    """Runs passes; remembers since when the API has answered without a break."""

    def __init__(self) -> None:
        self.api_up_since: datetime | None = None

    def run_pass(self) -> list[Recovery]:
        moment = datetime.now(UTC)
        if self.api_up_since is None:
            self.api_up_since = moment
        try:
            return self._pass(moment, self.api_up_since, get_settings().orchestration)
        except Exception:
            self.api_up_since = None  # an outage: clocks start again when it ends
            raise

    def watch(self, interval: float) -> None:
        """Passes every ``interval`` seconds until interrupted."""
        while True:
            try:
                for recovery in self.run_pass():
                    logger.warning("%s", recovery)
            except Exception as error:
                logger.warning("reconciliation pass failed: %s", error)
            time.sleep(interval)

    def _pass(
        self, moment: datetime, api_up_since: datetime, policy: OrchestrationSettings
    ) -> list[Recovery]:
        stall = timedelta(seconds=policy.stall_seconds)
        done: list[Recovery] = []
        with session_scope() as session, get_client(sync_client=True) as client:
            if not try_lock(session, LOCK):
                return done  # another worker's pass is under way
            owed: dict[str, uuid.UUID] = {}  # flow run id -> the media whose jobs it owes
            unplanned: dict[uuid.UUID, datetime] = {}  # media -> its oldest planned job
            for row in unfinished_jobs(session):
                if row.flow_run_id is None:
                    unplanned.setdefault(row.media_id, row.updated_at)
                else:
                    owed.setdefault(row.flow_run_id, row.media_id)
            runs = read_runs(client, list(owed))
            workers = read_workers(client, {r.work_pool_name for r in runs.values()})
            heartbeats = read_heartbeats(
                client,
                [r.id for r in runs.values() if r.state and r.state.type is StateType.RUNNING],
                moment - 2 * stall,
            )
            for run_id, media_id in owed.items():
                run = runs.get(run_id)
                if (reason := beyond_recovery(run_id, run)) is not None:
                    fail_unfinished_jobs(session, media_id, run_id, reason)
                    done.append(Recovery(str(media_id), run_id, "failed", reason))
                    continue
                assert run is not None
                reason = diagnose(run, workers, heartbeats.get(run.id), moment, api_up_since,
                                  stall)  # fmt: skip
                if reason is not None:
                    recovery = recover(client, session, run, media_id, reason, policy)
                    if recovery is not None:
                        done.append(recovery)
            for media_id, changed in unplanned.items():
                if moment - max(changed, api_up_since) > stall:
                    runs_made = submit_media(str(media_id))
                    done.append(Recovery(str(media_id), ", ".join(runs_made), "resubmitted",
                                         "planned jobs had no flow run"))  # fmt: skip
            for receipt in continue_erasures(client):
                if not receipt["pending"]:
                    done.append(Recovery(receipt["mediaId"], None, "erased",
                                         "what the stores still held is gone"))  # fmt: skip
        return done


def recover(
    client: SyncPrefectClient,
    session: Session,
    run: FlowRun,
    media_id: uuid.UUID,
    reason: str,
    policy: OrchestrationSettings,
) -> Recovery | None:
    """Schedule ``run`` again, or, after ``max_recoveries`` in a row, end it Crashed and
    its unfinished jobs FAILED. None when the run moved on while we looked."""
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
        return Recovery(str(media_id), str(run.id), "rescheduled", f"{attempt}: {reason}")
    if fresh.deployment_id is None:  # it ran inside a command, which is gone
        message = (
            f"{reason}; it ran in the process of a `media-pipeline process` command, which "
            f"ended: run the media again with `media-pipeline submit --reprocess {media_id}`"
        )
    else:
        message = (
            f"{reason}; scheduled again {fault - 1} times by the reconciler, not again: retry "
            f"with `media-pipeline retry-failed {run.id}`"
        )
    if fresh.state is None or fresh.state.type is not StateType.CRASHED:
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    fail_unfinished_jobs(session, media_id, str(run.id), message)
    return Recovery(str(media_id), str(run.id), "failed", message)


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
