"""Telling the app a media is done: a Prefect event and, when configured, a signed webhook.

The callback body is the media summary as JSON; ``X-Media-Pipeline-Signature`` carries
``sha256=<hex HMAC of the body with the configured secret>``. Delivery is retried with
a short backoff; a receiver that stays down is logged, never fails the media.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
from prefect.events import emit_event

from media_pipeline.settings import get_settings

FINAL_STATUSES = {"READY", "PARTIAL", "FAILED"}
SIGNATURE_HEADER = "X-Media-Pipeline-Signature"
logger = logging.getLogger(__name__)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notify_media_processed(summary: dict[str, Any]) -> bool:
    """Emit ``media.processed`` and POST the callback when the media's status is final.

    Returns whether the media was final (and so announced).
    """
    if summary["status"] not in FINAL_STATUSES:
        return False
    emit_event(
        event="media.processed",
        resource={"prefect.resource.id": f"media.{summary['media_id']}",
                  "prefect.resource.name": f"{summary['type'].lower()} {summary['media_id']}"},
        payload={"media_id": summary["media_id"], "status": summary["status"]},
    )  # fmt: skip
    post_callback(summary)
    return True


def post_callback(summary: dict[str, Any]) -> bool:
    settings = get_settings().notifications
    if not settings.callback_url:
        return False
    body = json.dumps(summary, sort_keys=True, default=str).encode()
    headers = {"content-type": "application/json"}
    secret = settings.callback_secret.get_secret_value()
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    for attempt in range(1, settings.callback_attempts + 1):
        try:
            response = httpx.post(settings.callback_url, content=body, headers=headers, timeout=10)
            if response.status_code < 400:
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        logger.warning("media callback attempt %d failed: %s", attempt, problem)
        if attempt < settings.callback_attempts:
            time.sleep(0.5 * 2 ** (attempt - 1))
    return False
