"""Failed and crashed runs of the pipeline, with the jobs each left failed or unfinished:
what ``failed``, ``retry-failed``, the queue board and the failure webhook read."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort

from db.jobs import unfinished_jobs_of_runs
from db.session import session_scope
from flows.run_creation import api_client
from flows.submission import FLOW_NAME
from media_pipeline.enums import MediaType
from tasks.table import JOB_TABLE

FAILED_STATES = (StateType.FAILED, StateType.CRASHED)


def state_filter(*types: StateType) -> FlowRunFilterState:
    return FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types)))


@dataclass(frozen=True)
class FailedRun:
    id: str
    name: str
    media_id: str | None
    media_type: str | None
    tier: str | None
    jobs: tuple[str, ...]  # the run's jobs that failed or never finished
    state: str
    message: str
    when: datetime | None
    permanent: bool  # every failed job said "not retried": running it again cannot help


def failed_runs(
    since: timedelta | None = None,
    flow_run_ids: Sequence[uuid.UUID] | None = None,
    job: str | None = None,
    media_type: str | None = None,
    limit: int = 200,
    client: SyncPrefectClient | None = None,
) -> list[FailedRun]:
    """Failed and crashed deployment runs of the pipeline, newest first; ``job`` keeps the
    runs in which that job failed (or never finished), ``media_type`` those of IMAGE,
    AUDIO or VIDEO media."""
    if job is not None and job not in JOB_TABLE.names():
        raise ValueError(f"unknown job {job!r}: one of {', '.join(JOB_TABLE.names())}")
    filters: dict[str, Any] = {"state": state_filter(*FAILED_STATES)}
    if media_type is not None:
        if media_type.upper() not in MediaType.__members__:
            raise ValueError(f"unknown media type {media_type!r}: IMAGE, AUDIO or VIDEO")
        filters["tags"] = FlowRunFilterTags(all_=[f"type-{media_type.lower()}"])
    if since is not None:
        filters["start_time"] = FlowRunFilterStartTime(after_=datetime.now(UTC) - since)
    if flow_run_ids:
        filters["id"] = FlowRunFilterId(any_=list(flow_run_ids))
    with api_client(client) as api:
        runs: list[FlowRun] = api.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(**filters),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
    runs = [r for r in runs if r.deployment_id is not None]  # in-process runs: no worker
    with session_scope() as session:
        unfinished = unfinished_jobs_of_runs(session, [str(r.id) for r in runs])
    found = [
        FailedRun(
            id=str(r.id),
            name=r.name,
            media_id=run_media(r),
            media_type=next((t[5:].upper() for t in r.tags if t.startswith("type-")), None),
            tier=r.parameters.get("tier"),
            jobs=tuple(job for job, _ in unfinished.get(str(r.id), ())),
            state=r.state.name if r.state else "?",
            message=(r.state.message or "") if r.state else "",
            when=r.start_time,
            permanent=is_permanent(unfinished.get(str(r.id), [])),
        )
        for r in runs
    ]
    return [run for run in found if job is None or job in run.jobs]


def run_media(run: FlowRun) -> str | None:
    """The media of a run: one, or several (comma-separated) for a backfill's run."""
    return run.parameters.get("media_id") or ", ".join(run.parameters.get("media_ids", ())) or None


def is_permanent(jobs: list[tuple[str, str | None]]) -> bool:
    return bool(jobs) and all("not retried" in (error or "") for _, error in jobs)
