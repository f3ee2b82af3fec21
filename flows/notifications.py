"""Telling the app a media is done: a Prefect event and, when configured, a signed webhook.

The webhook follows the Standard Webhooks specification (``standardwebhooks``): the body is
``{"type": "media.processed", "timestamp", "data": <MediaSummary>}``, and the headers
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` let a receiver check that we
sent it and refuse replays (an old timestamp, an id seen before). It is sent by a Prefect
task with the project's retry policy; a receiver that stays down is logged, and never
fails the media.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime

import httpx
from prefect import task
from prefect.events import emit_event
from standardwebhooks.webhooks import Webhook

from flows.execution import retry_delays
from media_pipeline.enums import MediaStatus
from media_pipeline.payloads import MediaSummary
from media_pipeline.settings import get_settings

FINAL_STATUSES = {MediaStatus.READY, MediaStatus.PARTIAL, MediaStatus.FAILED}
EVENT = "media.processed"
logger = logging.getLogger(__name__)


def webhook_signer(secret: str) -> Webhook:
    """A ``whsec_...`` secret as the specification writes it; any other string as raw bytes."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def webhook_request(
    summary: MediaSummary, message_id: str, secret: str, moment: datetime
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery."""
    body = json.dumps(
        {"type": EVENT, "timestamp": moment.isoformat(), "data": summary.model_dump(mode="json")},
        sort_keys=True,
    )
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
    }
    if secret:
        headers["webhook-signature"] = webhook_signer(secret).sign(message_id, moment, body)
    return body.encode(), headers


def deliver_webhook(summary: MediaSummary, message_id: str) -> int:
    """POST the summary to MEDIA_PIPELINE_CALLBACK_URL; raises (and so is retried) unless
    the receiver answers 2xx or 3xx. Each attempt is signed with its own timestamp."""
    settings = get_settings().notifications
    body, headers = webhook_request(
        summary, message_id, settings.callback_secret.get_secret_value(), datetime.now(UTC)
    )
    response = httpx.post(settings.callback_url, content=body, headers=headers, timeout=10)
    response.raise_for_status()
    return response.status_code


def notify_media_processed(summary: MediaSummary, flow_run_id: str | None) -> bool:
    """Emit ``media.processed`` and send the webhook when the media's status is final.

    Returns whether the media was final (and so announced).
    """
    if summary.status not in FINAL_STATUSES:
        return False
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"media.{summary.media_id}",
            "prefect.resource.name": f"{summary.type.value.lower()} {summary.media_id}",
        },
        payload={"media_id": str(summary.media_id), "status": summary.status.value},
    )
    if get_settings().notifications.callback_url:
        # The same id for every attempt of one announcement: receivers drop duplicates.
        seed = f"{summary.media_id}:{flow_run_id}:{summary.status.value}".encode()
        message_id = "msg_" + hashlib.sha256(seed).hexdigest()[:32]
        attempts = get_settings().orchestration.retry_attempts
        deliver = task(
            deliver_webhook,
            name="media-webhook",
            task_run_name=f"media-webhook · {summary.media_id}",  # erasure finds it by name
            retries=attempts - 1,
            retry_delay_seconds=retry_delays(),
            persist_result=False,
        )
        state = deliver(summary, message_id, return_state=True)
        if not state.is_completed():
            logger.warning(
                "media %s: the webhook was not delivered: %s", summary.media_id, state.message
            )
    return True
