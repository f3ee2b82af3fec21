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
4. the runs planned in the outbox are created (a relay of last resort: every API process
   runs one, but a site may run none), and planned jobs with neither a run nor a row in
   the outbox (their submitter died in between) are submitted again;
5. erasures whose stores could not all be cleared (a store away, runs still cancelling)
   are finished (``deployments/operations/erasure.py``);
6. backfills whose own run is stranded or ended early are resumed
   (``deployments/operations/backfill.py``).

Absence of heartbeats only counts while the reconciler itself has reached the API: after an
outage of the Prefect server every clock starts again. Each warm worker runs a reconciler
every ``reconcile_seconds``; one pass acts at a time (an advisory lock in the app
database). ``media-pipeline reconcile`` runs one pass, or a loop beside stock workers.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, StateType
from sqlalchemy.orm import Session

from db.jobs import fail_unfinished_jobs, try_lock, unfinished_jobs
from db.outbox import media_with_planned_runs
from db.session import session_scope
from deployments.operations.backfill import recover_backfills
from deployments.operations.erasure import continue_erasures
from deployments.operations.run_health import (
    diagnose,
    read_heartbeats,
    read_runs,
    read_workers,
    reschedule_or_give_up,
)
from flows.relay import relay_all
from flows.submission import submit_media
from media_pipeline.settings import OrchestrationSettings, get_settings

LOCK = "media-pipeline:reconciler"
# How often every flow run sends a heartbeat, under a worker or in a command's own process
# (Prefect's default is 180 s): a run silent for twice ``stall_seconds`` is stranded.
FLOW_HEARTBEAT_SECONDS = 30
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """What one pass did about one run (or one media without a run)."""

    media_id: str  # several, comma-separated, for a backfill's run
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
        with get_client(sync_client=True) as client:
            # Before this pass's transaction, which may hold SQLite's write lock.
            if relayed := relay_all(client):
                done.append(Recovery("outbox", None, "relayed", f"{relayed} planned runs made"))
            self._check(client, moment, api_up_since, policy, stall, done)
        return done

    def _check(
        self,
        client: SyncPrefectClient,
        moment: datetime,
        api_up_since: datetime,
        policy: OrchestrationSettings,
        stall: timedelta,
        done: list[Recovery],
    ) -> None:
        with session_scope() as session:
            if not try_lock(session, LOCK):
                return  # another worker's pass is under way
            owed: dict[str, list[uuid.UUID]] = {}  # flow run id -> media whose jobs it owes
            unplanned: dict[uuid.UUID, datetime] = {}  # media -> its oldest planned job
            for row in unfinished_jobs(session):
                if row.flow_run_id is None:
                    unplanned.setdefault(row.media_id, row.updated_at)
                elif row.media_id not in (media := owed.setdefault(row.flow_run_id, [])):
                    media.append(row.media_id)  # several for a backfill's run
            runs = read_runs(client, list(owed))
            workers = read_workers(client, {r.work_pool_name for r in runs.values()})
            heartbeats = read_heartbeats(
                client,
                [r.id for r in runs.values() if r.state and r.state.type is StateType.RUNNING],
                moment - 2 * stall,
            )
            for run_id, media_ids in owed.items():
                run = runs.get(run_id)
                if (reason := beyond_recovery(run_id, run)) is not None:
                    for media_id in media_ids:
                        fail_unfinished_jobs(session, media_id, run_id, reason)
                    done.append(Recovery(names(media_ids), run_id, "failed", reason))
                    continue
                assert run is not None
                reason = diagnose(run, workers, heartbeats.get(run.id), moment, api_up_since, stall)
                if reason is not None:
                    recovery = recover(client, session, run, media_ids, reason, policy)
                    if recovery is not None:
                        done.append(recovery)
            relaying = media_with_planned_runs(session)
            for media_id, changed in unplanned.items():
                if media_id not in relaying and moment - max(changed, api_up_since) > stall:
                    runs_made = submit_media(media_id, client=client)
                    done.append(
                        Recovery(
                            str(media_id),
                            ", ".join(runs_made),
                            "resubmitted",
                            "planned jobs had no flow run",
                        )
                    )
            for backfill, run_id, action, reason in recover_backfills(
                client, session, moment, api_up_since, policy
            ):
                done.append(Recovery(f"backfill {backfill}", run_id, action, reason))
            for receipt in continue_erasures(client):
                if not receipt["pending"]:
                    done.append(
                        Recovery(
                            receipt["mediaId"], None, "erased", "what the stores still held is gone"
                        )
                    )


def names(media_ids: list[uuid.UUID]) -> str:
    return ", ".join(map(str, media_ids))


def recover(
    client: SyncPrefectClient,
    session: Session,
    run: FlowRun,
    media_ids: list[uuid.UUID],
    reason: str,
    policy: OrchestrationSettings,
) -> Recovery | None:
    """Schedule ``run`` again, or, after ``max_recoveries`` in a row, end it Crashed and
    its unfinished jobs FAILED. None when the run moved on while we looked."""
    commands = ", ".join(f"`media-pipeline submit --reprocess {m}`" for m in media_ids)
    resubmit = f"run the media again with {commands}"
    outcome = reschedule_or_give_up(client, run, reason, policy, resubmit)
    if outcome is None:
        return None
    action, message = outcome
    if action == "failed":
        for media_id in media_ids:
            fail_unfinished_jobs(session, media_id, str(run.id), message)
    return Recovery(names(media_ids), str(run.id), action, message)
