"""Erasure: a media, or a whole alert, removed from every store the pipeline wrote to,
with a receipt.

1. The app database first, in one transaction: the media's rows (and its enhanced copy's)
   are deleted and a tombstone written (``db/erasure.py``). From then on a run of the
   media that records, publishes or uploads finds it erased and throws its outputs away.
2. The object store: every object under the media's folder (the enhanced copy's files
   sit there too).
3. Prefect: the media's runs (found by their ``media-<id>`` tag) still in flight are
   cancelled; once all are final, the persisted results of their task runs and their own
   are deleted, then the artifacts (by the runs and by the media's keys), then the runs,
   whose logs the server deletes with them.
4. Workers' temporary folders that still hold a copy (a run killed mid-job) are removed by
   each warm worker's reconciler.

A store that cannot be cleared yet (down, or runs still cancelling) stays in the
tombstone's ``pending``; the reconciler finishes it. Erasing again answers the receipt as
it stands: idempotent and resumable.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType, TaskRun
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from prefect.states import Cancelled, Cancelling

from db.erasure import (
    alert_media,
    erase_alert_if_empty,
    erase_rows,
    is_erased,
    lock_erasure,
    record_step,
    unfinished_erasures,
)
from db.models import MediaErasure
from db.session import session_scope, transaction
from flows.run_creation import api_client
from media_pipeline.errors import MediaNotFound
from media_pipeline.object_store import get_store
from media_pipeline.settings import get_settings
from media_pipeline.storage import parse_uuid
from tasks.table import BACKFILL_TAG

WORKSPACES = "media-pipeline-job-*"  # the object store's job folders (object_store.py)


def erase_media(
    media_ids: Sequence[uuid.UUID | str], client: SyncPrefectClient | None = None
) -> list[dict[str, Any]]:
    """Erase each media and its enhanced copy; a receipt per media erased."""
    wanted = [parse_uuid(m, "media id") for m in media_ids]
    receipts: list[dict[str, Any]] = []
    with api_client(client) as prefect:
        for media_id in wanted:
            tombstones = transaction(lambda session, m=media_id: erase_rows(session, m))
            if not tombstones:
                raise MediaNotFound(f"media {media_id} does not exist")
            receipts += [finish_erasure(t.media_id, prefect) for t in tombstones]
    return receipts


def erasure_plan(
    media_ids: Sequence[uuid.UUID | str], alert: uuid.UUID | str | None
) -> list[tuple[str, ...]]:
    """What an erasure would remove: each media (enhanced copies included) with its type,
    status and file name; erased ones say so."""
    from sqlalchemy import or_, select

    from db.models import Media

    def read(session: Any) -> list[tuple[str, ...]]:
        if alert is not None:
            wanted = alert_media(session, parse_uuid(alert, "alert id"))
        else:
            wanted = [parse_uuid(m, "media id") for m in media_ids]
        rows = session.scalars(
            select(Media).where(or_(Media.id.in_(wanted), Media.source_media_id.in_(wanted)))
        ).all()
        found = {m.id: (str(m.id), m.type.value, m.status.value, m.filename) for m in rows}
        for media_id in wanted:
            if media_id not in found and not is_erased(session, media_id):
                raise MediaNotFound(f"media {media_id} does not exist")
        erased = [(str(m), "", "erased", "") for m in wanted if m not in found]
        return [*found.values(), *erased]

    return transaction(read)


def erase_alert(
    alert_id: uuid.UUID | str, client: SyncPrefectClient | None = None
) -> dict[str, Any]:
    """Erase every media of the alert, then the alert row."""
    alert = parse_uuid(alert_id, "alert id")
    media = transaction(lambda session: alert_media(session, alert))
    if not media:
        raise MediaNotFound(f"alert {alert} has no media, erased or not")
    receipts = erase_media(media, client)
    removed = transaction(lambda session: erase_alert_if_empty(session, alert))
    return {"alertId": str(alert), "alertRemoved": removed, "media": receipts}


def continue_erasures(client: SyncPrefectClient) -> list[dict[str, Any]]:
    """Clear what unfinished erasures still hold (the reconciler's pass calls this)."""
    stall = get_settings().orchestration.stall_seconds
    before = datetime.now(UTC) - timedelta(seconds=stall)
    waiting = transaction(lambda session: unfinished_erasures(session, before))
    return [finish_erasure(tombstone.media_id, client) for tombstone in waiting]


def finish_erasure(media_id: uuid.UUID, client: SyncPrefectClient) -> dict[str, Any]:
    """Clear each store still pending (one finisher at a time); the receipt as it then
    stands."""
    with session_scope() as held:
        lock_erasure(held, media_id)
        tombstone = _tombstone(media_id)
        steps = {"store": clear_store, "prefect": clear_prefect}
        for store in [s for s in steps if s in tombstone.pending]:
            try:
                counts, why_not = steps[store](tombstone, client)
            except Exception as error:  # that store is away: the reconciler tries again
                counts, why_not = None, f"{type(error).__name__}: {error}"
            tombstone = transaction(
                lambda session, s=store, c=counts, w=why_not: record_step(
                    session, media_id, s, c, w
                )
            )
    sweep_workspaces()
    return receipt(tombstone)


def _tombstone(media_id: uuid.UUID) -> MediaErasure:
    def read(session: Any) -> MediaErasure:
        found = session.get(MediaErasure, media_id)
        if found is None:
            raise MediaNotFound(f"media {media_id} was never erased")
        return found  # type: ignore[no-any-return]

    return transaction(read)


def receipt(tombstone: MediaErasure) -> dict[str, Any]:
    return {
        "mediaId": str(tombstone.media_id),
        "alertId": str(tombstone.alert_id),
        "type": tombstone.type.value,
        "enhancedCopy": tombstone.is_enhanced,
        "erasedAt": tombstone.erased_at.isoformat(timespec="seconds"),
        "finishedAt": tombstone.finished_at.isoformat(timespec="seconds")
        if tombstone.finished_at
        else None,
        "removed": tombstone.receipt,
        "pending": tombstone.pending,
    }


def clear_store(tombstone: MediaErasure, _: SyncPrefectClient) -> tuple[dict[str, Any], None]:
    store = get_store()
    keys: list[str] = []
    if prefix := tombstone.keys.get("prefix"):
        keys += store.delete_prefix(prefix)
    for key in tombstone.keys.get("objects", []):
        if store.size(key) is not None:
            store.delete(key)
            keys.append(key)
    return {"objects": len(keys), "keys": keys}, None


def clear_prefect(
    tombstone: MediaErasure, client: SyncPrefectClient
) -> tuple[dict[str, Any] | None, str | None]:
    """Cancel the media's runs in flight; once every run is final, delete their results,
    artifacts and the runs themselves. A backfill's run is shared with other media: it is
    left to run (it passes over an erased media) and, once final, only this media's task
    runs and their results are deleted from it."""
    tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"media-{tombstone.media_id}"]))
    recorded = [uuid.UUID(r) for r in tombstone.keys.get("runs", [])]
    runs = list(
        {
            r.id: r
            for r in [
                *client.read_flow_runs(flow_run_filter=tagged),
                *(
                    client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=recorded))
                    )
                    if recorded
                    else []
                ),
            ]
        }.values()
    )
    flying = [r for r in runs if r.state is None or not r.state.is_final()]
    for run in flying:
        if BACKFILL_TAG in run.tags or (run.state and run.state.type is StateType.CANCELLING):
            continue
        scheduled = run.state is None or run.state.type is StateType.SCHEDULED
        state = Cancelled if scheduled else Cancelling
        client.set_flow_run_state(run.id, state(message="the media was erased"), force=True)
    if flying:
        return None, f"{len(flying)} runs in flight, cancelled or let end: waiting for them"
    own = [r for r in runs if BACKFILL_TAG not in r.tags]
    shared = [r.id for r in runs if BACKFILL_TAG in r.tags]
    of_runs = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[r.id for r in runs]))
    task_runs = client.read_task_runs(task_run_filter=of_runs) if runs else []
    # In a shared run, the media's task runs name it in full (flows/media.py).
    media = str(tombstone.media_id)
    mine = [t for t in task_runs if t.flow_run_id not in shared or media in t.name]
    results = delete_results(client, own, mine)
    artifacts = delete_artifacts(client, tombstone.media_id, [r.id for r in own])
    for task_run in mine:
        if task_run.flow_run_id in shared:  # the others go with their flow run
            with contextlib.suppress(ObjectNotFound):
                client.delete_task_run(task_run.id)
    for run in own:
        with contextlib.suppress(ObjectNotFound):  # the server deletes its logs with it
            client.delete_flow_run(run.id)
    counts = {"runs": len(own), "artifacts": artifacts, "results": results}
    return counts | ({"shared_runs": len(shared)} if shared else {}), None


def delete_results(client: SyncPrefectClient, runs: list[FlowRun], task_runs: list[TaskRun]) -> int:
    """The persisted results of the task runs and of the runs, where this machine reaches
    them (``MEDIA_PIPELINE_RESULTS_DIR``)."""
    states = [s for r in runs for s in client.read_flow_run_states(r.id)]
    for task_run in task_runs:
        states += client.read_task_run_states(task_run.id)
    base = get_settings().storage.results_dir or Path(str(PREFECT_LOCAL_STORAGE_PATH.value()))
    removed = 0
    for key in {getattr(s.data, "storage_key", None) for s in states} - {None}:
        path = Path(str(key)) if Path(str(key)).is_absolute() else base / str(key)
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def delete_artifacts(client: SyncPrefectClient, media_id: uuid.UUID, runs: list[uuid.UUID]) -> int:
    keys = [f"{kind}-{media_id}" for kind in ("media", "files", "transcription")]
    found = {
        a.id: a
        for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    }
    if runs:
        by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=runs))
        found |= {a.id: a for a in client.read_artifacts(artifact_filter=by_run)}
    for artifact_id in found:
        with contextlib.suppress(ObjectNotFound):
            client.delete_artifact(artifact_id)
    return len(found)


def sweep_workspaces() -> int:
    """Remove this machine's job folders that hold a copy of an erased media (left by a run
    killed mid-job); how many."""
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(WORKSPACES):
        ids = [uuid.UUID(p.name) for p in folder.glob("alerts/*/media/*") if _is_uuid(p.name)]
        if ids and transaction(lambda session, i=ids: any(is_erased(session, m) for m in i)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
