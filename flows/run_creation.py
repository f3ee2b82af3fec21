"""Creating flow runs on the deployments through Prefect's bulk endpoint: one request per
deployment, the deployment ids read once per process, and each run's idempotency key
giving the run made with it to a second request."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled, to_state_create

from media_pipeline.errors import PermanentError, TransientError


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


def api_client(
    client: SyncPrefectClient | None,
) -> contextlib.AbstractContextManager[SyncPrefectClient]:
    """``client`` when the caller keeps one open, else a new one for the block."""
    return contextlib.nullcontext(client) if client else get_client(sync_client=True)


# Deployment ids by (API URL, name): read once per process, so that a submission costs one
# request per deployment.
_deployment_ids: dict[tuple[str, str], uuid.UUID] = {}

BULK_LIMIT = 100  # runs per request: Prefect's own limit


class RunRefused(PermanentError):
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
            try:
                _deployment_ids[cache_key] = client.read_deployment_by_name(deployment).id
            except ObjectNotFound:  # the rows wait: made once the deployments exist
                raise TransientError(
                    f"the Prefect server has no deployment {deployment}: run "
                    "`media-pipeline setup` (the planned runs are made once it exists)"
                ) from None
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
