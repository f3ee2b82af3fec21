"""Flows that misbehave, deployed by tests to show what a worker does about them."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Any

from prefect import Flow, flow
from prefect.client.orchestration import SyncPrefectClient
from prefect.utilities.callables import parameter_schema

PROJECT_DIR = Path(__file__).resolve().parents[2]


@flow
def segfault() -> None:
    """A native crash, as a broken decoder would cause."""
    ctypes.string_at(0)


@flow
def sleepy(seconds: float = 300) -> None:
    time.sleep(seconds)


def deploy_test_flow(
    client: SyncPrefectClient, test_flow: Flow[..., Any], pool: str, queue: str
) -> str:
    """A deployment of ``test_flow`` on ``pool``, its code in this checkout; returns its id."""
    flow_id = client.create_flow_from_name(test_flow.name)
    deployment_id = client.create_deployment(
        flow_id=flow_id,
        name=f"test-{test_flow.name}",
        entrypoint=f"tests/support/worker_flows.py:{test_flow.fn.__name__}",
        work_pool_name=pool,
        work_queue_name=queue,
        pull_steps=[
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_DIR)}}
        ],
        parameter_openapi_schema=parameter_schema(test_flow).model_dump_for_openapi(),
    )
    return str(deployment_id)
