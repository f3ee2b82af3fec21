"""Retention: keep the newest failed runs for analysis, delete old finished ones, forget
uploads initiated but never completed, and erase the media of alerts closed long enough
(``MEDIA_PIPELINE_ERASE_CLOSED_AFTER_DAYS``, off by default).

Prefect's own vacuum deletes by age only; the seed kept the last 200 failed jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort

from db.erasure import alerts_closed_before
from db.repository import delete_abandoned_uploads
from db.session import transaction
from deployments.operations.erasure import erase_alert
from media_pipeline.object_store import get_store
from media_pipeline.settings import get_settings

PIPELINE_FLOWS = ["process-media"]
FAILED = [StateType.FAILED, StateType.CRASHED]
FINISHED = [StateType.COMPLETED, StateType.CANCELLED, *FAILED]


PAGE = 200


def all_runs(client: SyncPrefectClient, **filters: Any) -> list[FlowRun]:
    """Every matching flow run, read page by page (the API caps one read)."""
    runs: list[FlowRun] = []
    while True:
        page = client.read_flow_runs(**filters, limit=PAGE, offset=len(runs))
        runs.extend(page)
        if len(page) < PAGE:
            return runs


def erase_closed_alerts() -> int:
    """Erase the media of alerts closed longer ago than ``erase_closed_after_days`` (when
    set); their receipts become the ``erasure-receipts`` artifact. How many media."""
    days = get_settings().storage.erase_closed_after_days
    if not days:
        return 0
    closed_before = datetime.now(UTC) - timedelta(days=days)
    alerts = transaction(lambda session: alerts_closed_before(session, closed_before))
    receipts = [r for alert in alerts for r in erase_alert(str(alert))["media"]]
    if receipts:
        create_table_artifact(
            key="erasure-receipts",
            table=[
                {
                    "media": r["mediaId"],
                    "alert": r["alertId"],
                    "type": r["type"],
                    "erased_at": r["erasedAt"],
                    "pending": ", ".join(r["pending"]) or "none",
                }
                for r in receipts
            ],
            description=f"Media of alerts closed more than {days:g} days ago, erased",
        )
    return len(receipts)


@flow(name="prune-flow-runs")
def prune_flow_runs(
    keep_failed: int = 200,
    max_age_days: float = 30,
    flow_names: list[str] | None = None,
    abandoned_upload_hours: float = 24,
) -> dict[str, int]:
    """Delete failed runs beyond the newest ``keep_failed``, and finished runs older than
    ``max_age_days`` (except those kept failed ones), of the pipeline's flows; and media
    initiated through the API more than ``abandoned_upload_hours`` ago but never
    completed, with whatever was uploaded for them."""
    cutoff = datetime.now(UTC) - timedelta(days=max_age_days)
    flows = FlowFilter(name=FlowFilterName(any_=flow_names or PIPELINE_FLOWS))
    deleted = {
        "failed_beyond_limit": 0,
        "older_than_age": 0,
        "abandoned_uploads": 0,
        "erased_media": erase_closed_alerts(),
    }
    initiated_before = datetime.now(UTC) - timedelta(hours=abandoned_upload_hours)
    store = get_store()
    for key in transaction(lambda session: delete_abandoned_uploads(session, initiated_before)):
        store.delete(key)
        deleted["abandoned_uploads"] += 1
    with get_client(sync_client=True) as client:
        failed = all_runs(
            client,
            flow_filter=flows,
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=FAILED))
            ),
            sort=FlowRunSort.END_TIME_DESC,
        )
        kept = {run.id for run in failed[:keep_failed]}
        for run in failed[keep_failed:]:
            client.delete_flow_run(run.id)
            deleted["failed_beyond_limit"] += 1
        old = all_runs(
            client,
            flow_filter=flows,
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=FINISHED)),
                end_time=FlowRunFilterEndTime(before_=cutoff),
            ),
            sort=FlowRunSort.END_TIME_DESC,
        )
        gone = {run.id for run in failed[keep_failed:]}
        for run in old:
            if run.id not in kept and run.id not in gone:
                client.delete_flow_run(run.id)
                deleted["older_than_age"] += 1
    get_run_logger().info("retention: %s", deleted)
    return deleted
