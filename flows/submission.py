"""Creating a media's flow runs on the deployments: one per priority tier it needs.

Idempotent, also under concurrency: the job rows are planned under the media's row lock,
and each tier's run has an idempotency key, so every caller gets the same run ids. The
planned rows record their run, so a run lost before it starts is found from the media's
side too (see ``deployments/operations/reconciler.py``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.states import Scheduled, to_state_create
from sqlalchemy.orm import Session

from db.jobs import assign_runs, plan_jobs
from db.session import transaction
from flows.sources import MediaSource, read_source
from media_pipeline.errors import PermanentError, PipelineError
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_QUEUE, BACKFILL_TAG, JOB_TABLE, Job, tiers

FLOW_NAME = "process-media"


def deployment_name(tier: str) -> str:
    """``process-media/<pool>-<tier>``: each work pool has deployments of its own (as
    ``prefect.yaml`` names them), so two pools on one server never take each other's."""
    return f"{FLOW_NAME}/{get_settings().orchestration.work_pool}-{tier}"


def run_name(media_id: str, tier: str | None) -> str:
    """``media · <8 characters of the media id> · <tier>``, at creation and at start."""
    return f"media · {media_id[:8]} · {tier or 'all'}"


@dataclass(frozen=True)
class Submission:
    """A media's planned jobs, waiting for their flow runs."""

    source: MediaSource
    jobs: list[Job]
    generation: str  # part of the runs' idempotency keys
    named: bool  # only the jobs asked for (their runs say which)
    # A backfill's: one run on the backfill queue, made once whoever asks (its idempotency
    # key names the backfill), not one per tier.
    backfill: uuid.UUID | None = None


def plan_submission(
    session: Session,
    media_id: object,
    reprocess: bool = False,
    jobs: list[str] | None = None,
    generation: str | None = None,
) -> Submission:
    """Plan the media's jobs (PENDING rows) in the caller's transaction; ``generation``
    reprocesses under that key (the same runs whoever asks with it)."""
    source = read_source(session, media_id)
    wanted = JOB_TABLE.select(source, get_settings().gemini.enhancement_categories, jobs)
    if jobs is not None:
        if not wanted:
            raise PermanentError(
                f"{', '.join(jobs)} does not apply to {source.type.value} media "
                f"{source.media_id} (alert category {source.category})"
            )
        reprocess = True
    reprocess = reprocess or generation is not None
    plan_jobs(session, source.media_id, [job.name for job in wanted], reset=reprocess)
    generation = generation or (uuid.uuid4().hex[:8] if reprocess else "first")
    return Submission(source, wanted, generation, named=jobs is not None)


@dataclass(frozen=True)
class RunRequest:
    """One flow run to create on a deployment (``flow/deployment``): Prefect's
    ``DeploymentFlowRunCreate`` as JSON."""

    deployment: str
    body: dict[str, Any]


def run_request(deployment: str, **fields: Any) -> RunRequest:
    """A Scheduled run of ``deployment`` with ``fields`` (parameters, name, tags...).

    The parameters are not checked against the deployment's schema by the server: this
    code builds them, and the flow checks them again when it starts. That check cost the
    server a fifth of its CPU per run (runs made in the UI are still checked).
    """
    body = DeploymentFlowRunCreate(state=to_state_create(Scheduled()), **fields)
    body.enforce_parameter_schema = False
    return RunRequest(deployment, body.model_dump(mode="json", exclude_unset=True))


RunCreator = Callable[[Sequence[RunRequest]], list[str]]


def queues_of(submission: Submission) -> dict[str, list[str]]:
    """Queue -> the names of the planned jobs its run does: one run per priority tier, or
    one on the backfill queue for a backfill."""
    if submission.backfill is not None:
        return {BACKFILL_QUEUE: [job.name for job in submission.jobs]}
    lanes = sorted({job.queue for job in submission.jobs}, key=tiers().index)
    return {lane: [job.name for job in submission.jobs if job.queue == lane] for lane in lanes}


def create_runs(submission: Submission, create: RunCreator) -> dict[str, str]:
    """One flow run per tier of the planned jobs (the same runs for the same submission);
    job name -> flow run id."""
    source = submission.source
    requests: list[RunRequest] = []
    names_of: list[list[str]] = []
    for lane, names in queues_of(submission).items():
        backfill = submission.backfill
        tier = None if backfill else lane
        parameters: dict[str, Any] = {"media_id": str(source.media_id)}
        parameters |= {"tier": tier} if tier else {}
        if submission.named:
            parameters["jobs"] = names
        # Named and tagged at creation, so that a run waiting in a queue can be found by
        # its media, its alert or its jobs in the UI's search.
        requests.append(
            run_request(
                deployment_name(lane),
                parameters=parameters,
                name=run_name(str(source.media_id), lane),
                idempotency_key=f"{source.media_id}:{lane}:{submission.generation}",
                tags=[
                    f"media-{source.media_id}",
                    f"alert-{source.alert_id}",
                    f"type-{source.type.value.lower()}",
                    f"category-{source.category.lower()}",
                    f"tier-{lane}",
                    *(f"job-{name}" for name in names),
                    *((BACKFILL_TAG, f"backfill-{backfill}") if backfill else ()),
                ],
            )
        )
        names_of.append(names)
    runs: dict[str, str] = {}
    for names, run_id in zip(names_of, create(requests), strict=True):
        runs.update(dict.fromkeys(names, run_id))
    return runs


def submit_media(
    media_id: str,
    reprocess: bool = False,
    jobs: list[str] | None = None,
    create: RunCreator | None = None,
    generation: str | None = None,
) -> list[str]:
    """Create the media's flow runs (one per priority tier) and return their ids at once.

    Calling it again returns the same runs, unless ``reprocess`` asks for new ones (or a
    new ``generation``: the same runs for the same one). ``jobs`` runs only those jobs
    again (new runs; a new transcription version, say). A long-lived caller (the HTTP API)
    passes its ``RunBatcher``.
    """
    submission = transaction(
        lambda session: plan_submission(session, media_id, reprocess, jobs, generation)
    )
    if create is None:
        with get_client(sync_client=True) as client:
            runs = create_runs(submission, lambda requests: create_flow_runs(client, requests))
    else:
        runs = create_runs(submission, create)
    transaction(lambda session: assign_runs(session, submission.source.media_id, runs))
    return list(dict.fromkeys(runs.values()))


def api_client(
    client: SyncPrefectClient | None,
) -> contextlib.AbstractContextManager[SyncPrefectClient]:
    """``client`` when the caller keeps one open, else a new one for the block."""
    return contextlib.nullcontext(client) if client else get_client(sync_client=True)


# Deployment ids by (API URL, name): read once per process, so that a submission costs one
# request per deployment.
_deployment_ids: dict[tuple[str, str], uuid.UUID] = {}

BULK_LIMIT = 100  # runs per request: Prefect's own limit


class RunRefused(PipelineError):
    """Prefect refused to create one flow run (its message says why)."""


def create_flow_runs(client: SyncPrefectClient, requests: Sequence[RunRequest]) -> list[str]:
    """The flow run id of each request, in order; ``RunRefused`` for the first one refused."""
    results = send_run_requests(client, requests)
    for result in results:
        if isinstance(result, RunRefused):
            raise result
    return [str(result) for result in results]


def send_run_requests(
    client: SyncPrefectClient, requests: Sequence[RunRequest]
) -> list[str | RunRefused]:
    """Create the runs through Prefect's bulk endpoint, one request per deployment (and per
    ``BULK_LIMIT`` runs): each request's run id, or why Prefect refused it. An idempotency
    key already used gives the run made with it."""
    results: dict[int, str | RunRefused] = {}
    by_deployment: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        by_deployment.setdefault(request.deployment, []).append(index)
    for deployment, indexes in by_deployment.items():
        for start in range(0, len(indexes), BULK_LIMIT):
            chunk = indexes[start : start + BULK_LIMIT]
            answers = _bulk_create(client, deployment, [requests[i].body for i in chunk])
            for index, answer in zip(chunk, answers, strict=True):
                results[index] = (
                    str(answer["flow_run_id"])
                    if answer["status"] == "CREATED"
                    else RunRefused(f"Prefect refused a run of {deployment}: {answer['error']}")
                )
    return [results[index] for index in range(len(requests))]


def _bulk_create(
    client: SyncPrefectClient, deployment: str, bodies: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    cache_key = (str(client.api_url), deployment)

    def send() -> list[dict[str, Any]]:
        if cache_key not in _deployment_ids:
            _deployment_ids[cache_key] = client.read_deployment_by_name(deployment).id
        path = {"id": _deployment_ids[cache_key]}
        response = client.request(
            "POST", "/deployments/{id}/create_flow_run/bulk", path_params=path, json=bodies
        )
        return response.json()["results"]  # type: ignore[no-any-return]

    try:
        return send()
    except httpx.HTTPStatusError as error:  # deployed again under a new id: look it up again
        if error.response.status_code != 404:
            raise
        _deployment_ids.pop(cache_key, None)
        return send()


class RunBatcher:
    """Creates the flow runs of concurrent callers together (group commit), for a
    long-lived process that submits often (the HTTP API).

    While a request to Prefect is in flight, the runs asked for meanwhile wait and go in
    the next one: under load the server pays its cost per request (routing, reading the
    deployment, a transaction) once per batch, not once per run. A caller alone is sent
    at once: nothing waits for a batch to fill.
    """

    def __init__(self, client: SyncPrefectClient) -> None:
        self._client = client
        self._queue: queue.SimpleQueue[tuple[RunRequest, Future[str]] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_batches, name="run-batcher", daemon=True)
        self._sender.start()

    def __call__(self, requests: Sequence[RunRequest], timeout: float | None = None) -> list[str]:
        """The runs' ids; ``TimeoutError`` after ``timeout`` seconds (the runs may still be
        made: their idempotency keys give the same ones to the next call)."""
        futures: list[Future[str]] = []
        for request in requests:
            futures.append(Future())
            self._queue.put((request, futures[-1]))
        deadline = None if timeout is None else time.monotonic() + timeout
        return [
            f.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
            for f in futures
        ]

    def close(self) -> None:
        """Send what is queued, then stop."""
        self._queue.put(None)
        self._sender.join()

    def _send_batches(self) -> None:
        stopping = False
        while not stopping and (item := self._queue.get()) is not None:
            batch = [item]
            while len(batch) < BULK_LIMIT:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._send(batch)

    def _send(self, batch: list[tuple[RunRequest, Future[str]]]) -> None:
        try:
            results = send_run_requests(self._client, [request for request, _ in batch])
        except Exception as error:  # the whole request failed: every caller hears it
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, RunRefused):
                future.set_exception(result)
            else:
                future.set_result(result)
