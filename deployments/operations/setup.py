"""``media-pipeline setup``: the work pool, its queues, limits, automations, deployments.

Idempotent: every piece is created when missing and brought up to date otherwise.
Queue priorities come from the job table (high 5, normal 10, low 15); Prefect's own
``default`` queue is moved below them, and nothing is routed to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from prefect.workers.base import BaseWorker
from prefect.workers.process import ProcessWorker

from deployments.operations.failures import FAILED_STATES
from deployments.operations.reconciler import FLOW_HEARTBEAT_SECONDS
from flows.rate_limits import calls_per_minute
from flows.submission import FLOW_NAME
from media_pipeline.object_store import S3Store, get_store
from media_pipeline.settings import get_settings
from tasks.table import BACKFILL_PRIORITY, BACKFILL_QUEUE, PRIORITY_QUEUES

PROJECT_DIR = Path(__file__).resolve().parents[2]  # the project: prefect.yaml
DEFAULT_QUEUE_PRIORITY = 1000  # below every tier: nothing should ever wait there
# Worker machines install the project at the same path as the one running set-up.
ENGINE_COMMAND = f"{sys.executable} -m prefect.engine"
FAILURE_AUTOMATION = "media-pipeline: notify failed media runs"
FAILURE_BLOCK = "media-pipeline-failures"
ZOMBIE_AUTOMATION = "media-pipeline: crash flow runs without heartbeats"  # replaced


# The pool's worker types. The warm worker is found as Prefect finds it, through the
# project's ``prefect.collections`` entry point: set-up never imports the worker.
WORKER_TYPES = ("media-warm-process", ProcessWorker.type)


def ensure_work_pool(
    client: SyncPrefectClient, pool: str, results_dir: Path | None, worker_type: str
) -> None:
    worker = BaseWorker.get_worker_class_from_type(worker_type)
    if worker_type not in WORKER_TYPES or worker is None:
        raise ValueError(
            f"unknown worker type {worker_type!r}: use one of {', '.join(WORKER_TYPES)}"
        )
    default_template = worker.get_default_base_job_template()
    try:
        existing = client.read_work_pool(pool)
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(name=pool, type=worker_type, base_job_template=default_template)
        )
        existing = client.read_work_pool(pool)
    if existing.type != worker_type:
        raise ValueError(
            f"work pool {pool!r} is of type {existing.type!r}, not {worker_type!r}; a pool's "
            f"type cannot change: delete it (prefect work-pool delete {pool}) or name "
            "another pool with MEDIA_PIPELINE_WORK_POOL"
        )
    template = existing.base_job_template or default_template
    variables = template.get("variables", {}).get("properties", {})
    if "env" in variables:
        # Flow runs send heartbeats, which the reconciler reads; task results go where
        # every worker reads them, so a rescheduled run reuses finished jobs; the Prefect
        # API's 500 and 504 (its database restarting) are retried like its 502 and 503.
        env = {
            **(variables["env"].get("default") or {}),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(FLOW_HEARTBEAT_SECONDS),
            "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500,504",
        }
        env.pop("PREFECT_LOCAL_STORAGE_PATH", None)
        if results_dir is not None:  # else each worker's own (object storage, no shared dir)
            env["PREFECT_LOCAL_STORAGE_PATH"] = str(results_dir)
        variables["env"]["default"] = env
    if worker_type == ProcessWorker.type and not variables.get("command", {}).get("default"):
        # The engine itself, not Prefect's default launcher (a supervisor process that
        # imports Prefect before the engine does it again): half the start-up CPU.
        variables.setdefault("command", {"type": "string"})["default"] = ENGINE_COMMAND
    client.update_work_pool(pool, WorkPoolUpdate(base_job_template=template))


def ensure_queues(client: SyncPrefectClient, pool: str) -> dict[str, int]:
    """Tier queues at the job table's priorities, then the backfill queue, ``default`` last.
    Returns name -> priority."""
    queues = {queue.name: queue for queue in client.read_work_queues(work_pool_name=pool)}
    if "default" in queues and queues["default"].priority != DEFAULT_QUEUE_PRIORITY:
        client.update_work_queue(queues["default"].id, priority=DEFAULT_QUEUE_PRIORITY)
    wanted = {**PRIORITY_QUEUES, BACKFILL_PRIORITY: BACKFILL_QUEUE}
    for priority, name in sorted(wanted.items()):
        if name not in queues:
            client.create_work_queue(
                name=name,
                work_pool_name=pool,
                priority=priority,
                description=f"media jobs of priority {priority}"
                + (" (backfills)" if name == BACKFILL_QUEUE else ""),
            )
        elif queues[name].priority != priority:
            client.update_work_queue(queues[name].id, priority=priority)
    return {q.name: q.priority for q in client.read_work_queues(work_pool_name=pool)}


def remove_zombie_automation(client: SyncPrefectClient) -> None:
    """Earlier set-ups made Prefect's zombie automation; the reconciler does its work (and
    covers runs that die before their first heartbeat, which it never caught)."""
    for existing in client.read_automations_by_name(ZOMBIE_AUTOMATION):
        client.delete_automation(existing.id)


def ensure_failure_notifications(client: SyncPrefectClient, webhook_url: str) -> bool:
    """An automation that POSTs every failed or crashed media run to ``webhook_url``
    through a webhook block (the URL kept as one of its secrets). Removed when no URL is
    configured. Returns whether it exists."""
    for existing in client.read_automations_by_name(FAILURE_AUTOMATION):
        client.delete_automation(existing.id)
    if not webhook_url:
        return False
    block = CustomWebhookNotificationBlock(
        name="media-pipeline failures",
        url="{{url}}",
        json_data={"text": "{{subject}}\n{{body}}", "subject": "{{subject}}", "body": "{{body}}"},
        secrets={"url": webhook_url},
    )
    block_id = block.save(FAILURE_BLOCK, overwrite=True)
    client.create_automation(
        AutomationCore(
            name=FAILURE_AUTOMATION,
            description="Tell the on-call channel when a media run fails or crashes",
            trigger=EventTrigger(
                expect={f"prefect.flow-run.{s.value.title()}" for s in FAILED_STATES},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": FLOW_NAME,
                },
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[
                SendNotification(
                    block_document_id=block_id,
                    subject="media-pipeline: {{ flow_run.name }} {{ flow_run.state.name }}",
                    body="{{ flow_run.state.message }}\n{{ flow_run|ui_url }}\n"
                    "Re-run with `media-pipeline retry-failed {{ flow_run.id }}`",
                )
            ],
        )
    )
    return True


def prefect_client_env() -> dict[str, str]:
    """The variables that point a process we start at the Prefect server this one talks
    to (a local server's address and credentials live in its settings, not the
    environment)."""
    api = get_current_settings().api
    env = {"PREFECT_API_URL": api.url} if api.url else {}
    if api.auth_string is not None:
        env["PREFECT_API_AUTH_STRING"] = api.auth_string.get_secret_value()
    return env


def deploy(pool: str, code_dir: Path = PROJECT_DIR) -> None:
    """``prefect deploy --all`` on the project's ``prefect.yaml``."""
    env = {
        **os.environ,
        "MEDIA_PIPELINE_WORK_POOL": pool,
        "MEDIA_PIPELINE_CODE_DIR": str(code_dir),
        **prefect_client_env(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"prefect deploy failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )


def setup(deployments: bool = True) -> dict[str, object]:
    """Everything the production profile needs on the Prefect server; safe to re-run."""
    settings = get_settings()
    pool = settings.orchestration.work_pool
    with get_client(sync_client=True) as client:
        ensure_work_pool(
            client, pool, settings.storage.results_dir, settings.orchestration.worker_type
        )
        queues = ensure_queues(client, pool)
        remove_zombie_automation(client)
        webhook = settings.notifications.failure_webhook_url.get_secret_value()
        notifies = ensure_failure_notifications(client, webhook)
    limits = calls_per_minute()
    store = get_store()
    if isinstance(store, S3Store):
        store.ensure_bucket()
    if deployments:
        deploy(pool)
    return {
        "pool": pool,
        "worker_type": settings.orchestration.worker_type,
        "queues": queues,
        "rate_limits_per_minute": limits,
        "failure_webhook": notifies,
        "storage": settings.storage.storage_url or str(settings.media_root),
    }
